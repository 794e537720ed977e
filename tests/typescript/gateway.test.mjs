// The gateway with the official pieces on both sides: the TypeScript SDK
// client reaches the official reference server
// (`@modelcontextprotocol/server-everything`, streamableHttp mode) through
// Cola's /mcp/{slug}, with a key granted two of its tools — as
// docs/gateway.md walks a newcomer through it.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

import { Cola } from "./cola.mjs";

const EVERYTHING = new URL("./node_modules/@modelcontextprotocol/server-everything/dist/index.js", import.meta.url)
  .pathname;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

/** The reference server, awaited by its own "listening" line. */
async function startEverything() {
  const port = await freePort();
  const child = spawn(process.execPath, [EVERYTHING, "streamableHttp"], {
    env: { PATH: process.env.PATH, PORT: String(port) },
    stdio: ["ignore", "ignore", "pipe"],
  });
  await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on("line", (line) => {
      if (line.includes("listening on port")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`server-everything exited (${code})`)));
  });
  return { child, url: `http://127.0.0.1:${port}/mcp` };
}

let cola;
let everything;
before(async () => {
  everything = await startEverything();
  cola = await Cola.start({
    COLA_GATEWAY_ALLOWED_NETWORKS: "127.0.0.0/8",
    COLA_SECRETS_KEY: Buffer.alloc(32, "b").toString("base64"),
  });
});
after(() => {
  cola?.stop();
  everything?.child.kill("SIGTERM");
});

async function connect(slug, key) {
  const transport = new StreamableHTTPClientTransport(new URL(`/mcp/${slug}`, cola.base), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  const client = new Client({ name: "cola-ts-gateway-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

test("a key granted two tools of the reference server sees and calls exactly those two", async () => {
  const admin = cola.owner("admin");
  const registered = await cola.api("POST", "/api/mcp/servers", admin.token, {
    slug: "everything",
    name: "The reference server",
    url: everything.url,
  });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const key = await cola.createKey(admin.token, {
    name: "two tools",
    permissions: {
      read: true,
      write: true,
      servers: { everything: { allowed_tools: ["echo", "get-sum"], allowed_resources: null, allowed_prompts: null } },
    },
  });
  const client = await connect("everything", key.key);
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name).sort(), ["echo", "get-sum"]);
    const echoed = await client.callTool({ name: "echo", arguments: { message: "through cola" } });
    assert.match(echoed.content[0].text, /through cola/);
    const sum = await client.callTool({ name: "get-sum", arguments: { a: 2, b: 3 } });
    assert.match(sum.content[0].text, /5/);
    // get-env would hand the caller the server's environment: not granted.
    await assert.rejects(client.callTool({ name: "get-env", arguments: {} }), /Unknown tool: get-env/);
  } finally {
    await client.close();
  }
});

test("a revoked key is refused by the gateway on its next request", async () => {
  const admin = cola.owner("admin");
  const registered = await cola.api("POST", "/api/mcp/servers", admin.token, {
    slug: "everything-2",
    name: "The reference server again",
    url: everything.url,
  });
  assert.equal(registered.status, 201);
  const key = await cola.createKey(admin.token, {
    name: "to revoke",
    permissions: {
      read: true,
      write: true,
      servers: { "everything-2": { allowed_tools: ["echo"], allowed_resources: null, allowed_prompts: null } },
    },
  });
  const client = await connect("everything-2", key.key);
  try {
    await client.callTool({ name: "echo", arguments: { message: "before" } });
    const revoked = await cola.api("DELETE", `/api/mcp/keys/${key.id}`, admin.token);
    assert.equal(revoked.status, 204);
    await assert.rejects(client.callTool({ name: "echo", arguments: { message: "after" } }), /401|valid Cola API key/);
  } finally {
    await client.close().catch(() => {});
  }
});

/** One raw JSON-RPC POST through the gateway; the body is text, so an id
 * beyond 2^53 goes out digit for digit. Answers the raw response text. */
async function rawPost(slug, key, body, sessionId) {
  const headers = {
    Authorization: `Bearer ${key}`,
    "Content-Type": "application/json",
    Accept: "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
  };
  if (sessionId) headers["Mcp-Session-Id"] = sessionId;
  const response = await fetch(new URL(`/mcp/${slug}`, cola.base), { method: "POST", headers, body });
  return { status: response.status, session: response.headers.get("mcp-session-id"), text: await response.text() };
}

test("a JavaScript upstream that rewrites a big request id still has its list filtered", async () => {
  // JSON.parse turns 9007199254740993 into 9007199254740992: an upstream in
  // JavaScript answers a request under another id than the client sent.
  const admin = cola.owner("admin");
  const registered = await cola.api("POST", "/api/mcp/servers", admin.token, {
    slug: "everything-js",
    name: "The reference server (JavaScript)",
    url: everything.url,
  });
  assert.equal(registered.status, 201);
  const key = await cola.createKey(admin.token, {
    name: "echo only",
    permissions: {
      read: true,
      write: true,
      servers: { "everything-js": { allowed_tools: ["echo"], allowed_resources: null, allowed_prompts: null } },
    },
  });
  const init = await rawPost(
    "everything-js",
    key.key,
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}',
  );
  assert.equal(init.status, 200, init.text);
  const initialized = await rawPost(
    "everything-js",
    key.key,
    '{"jsonrpc":"2.0","method":"notifications/initialized"}',
    init.session,
  );
  assert.equal(initialized.status, 202, initialized.text);
  const listed = await rawPost(
    "everything-js",
    key.key,
    '{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/list","params":{}}',
    init.session,
  );
  assert.equal(listed.status, 200, listed.text);
  // Only the granted tool, and the client's own id back, digit for digit.
  assert.match(listed.text, /"id":9007199254740993[,}]/);
  const names = [...listed.text.matchAll(/"name":"([^"]+)"/g)].map((match) => match[1]);
  assert.ok(names.includes("echo"), listed.text);
  for (const hidden of ["get-env", "get-sum", "trigger-long-running-operation"]) {
    assert.ok(!names.includes(hidden), `${hidden} reached the client: ${listed.text.slice(0, 400)}`);
  }
});
