// Loopback proxy for the conformance run: the suite's `server` command has no
// way to send a header, and every request to Cola's /mcp needs a key. It
// forwards each request unchanged (Host and Origin included, which the
// DNS-rebinding scenario is about) except for `Authorization`, which it sets
// to the key.
//
// Protocol with run.sh, so that Cola can be started knowing this proxy's
// origin before the proxy knows Cola's address and key:
//   stdout: `http://127.0.0.1:<port>` once listening
//   stdin:  one line `<cola base url> <key>`
//   stdout: `ready` once configured
// It exits when its stdin closes, so it never outlives run.sh.

import http from "node:http";
import { createInterface } from "node:readline";

// Hop-by-hop headers belong to one connection, not to the message.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

function endToEnd(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name)));
}

let upstream = null;

const server = http.createServer((request, response) => {
  if (upstream === null) {
    response.writeHead(503, { "content-type": "text/plain" }).end("proxy not configured yet\n");
    return;
  }
  const headers = { ...endToEnd(request.headers), authorization: `Bearer ${upstream.key}` };
  const forwarded = http.request(
    { host: upstream.url.hostname, port: upstream.url.port, path: request.url, method: request.method, headers },
    (answer) => {
      response.writeHead(answer.statusCode, endToEnd(answer.headers));
      // Piped, not buffered: an SSE answer reaches the suite as it comes.
      answer.pipe(response);
    },
  );
  forwarded.on("error", (error) => {
    if (!response.headersSent) response.writeHead(502, { "content-type": "text/plain" });
    response.end(`proxy: ${error.message}\n`);
  });
  request.pipe(forwarded);
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`http://127.0.0.1:${server.address().port}\n`);
});

const input = createInterface({ input: process.stdin });
input.once("line", (line) => {
  const [base, key] = line.trim().split(/\s+/);
  if (!base || !key) {
    process.stderr.write("proxy: expected `<cola base url> <key>` on stdin\n");
    process.exit(2);
  }
  upstream = { url: new URL(base), key };
  process.stdout.write("ready\n");
});
input.on("close", () => process.exit(0));
