// A small MCP server (official TypeScript SDK, Streamable HTTP on express)
// that admits Cola keys by asking Cola, not by holding them: register it in
// Cola with "url": null, mint its verification token, grant keys on its
// slug, and run
//
//   COLA_URL=https://cola.example.com COLA_SERVER_TOKEN=colasrv_… node server.mjs
//
// Clients connect to http://127.0.0.1:8000/mcp (PORT, HOST to change it) with
// `Authorization: Bearer cola_…`; a key Cola does not answer VALID gets 401.

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import * as z from "zod/v4";

import { ColaTokenVerifier, mayUseTool, rememberClientAddress } from "./cola-verifier.mjs";

const verifier = new ColaTokenVerifier(process.env.COLA_URL, process.env.COLA_SERVER_TOKEN);
const notes = [];

function refused(name) {
  return { isError: true, content: [{ type: "text", text: `this key may not use ${name}` }] };
}

function text(value) {
  return { content: [{ type: "text", text: value }] };
}

// Stateless: a new server and transport for each request, as the SDK's
// stateless example does; every request is verified on its own.
function notesServer() {
  const server = new McpServer({ name: "notes", version: "1.0.0" });
  server.registerTool(
    "list_notes",
    { description: "Lists the notes (read-only).", annotations: { readOnlyHint: true } },
    async (extra) => {
      if (!mayUseTool(extra.authInfo, "list_notes", { readOnly: true })) return refused("list_notes");
      return text(notes.join("\n") || "(no notes)");
    },
  );
  server.registerTool(
    "add_note",
    {
      description: "Adds a note (writes: needs a key with write permission).",
      inputSchema: { text: z.string() },
      annotations: { readOnlyHint: false },
    },
    async ({ text: note }, extra) => {
      if (!mayUseTool(extra.authInfo, "add_note", { readOnly: false })) return refused("add_note");
      notes.push(note);
      return text(`noted: ${note}`);
    },
  );
  server.registerTool(
    "whoami",
    { description: "Who Cola says is calling: tenant, user, key and permissions.", annotations: { readOnlyHint: true } },
    async (extra) => text(JSON.stringify(extra.authInfo.extra)),
  );
  return server;
}

const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 8000);
const app = createMcpExpressApp({ host });

// No resourceMetadataUrl: Cola keys are static, and advertising OAuth
// metadata would send OAuth-capable clients into a login they cannot finish.
app.post("/mcp", rememberClientAddress, requireBearerAuth({ verifier }), async (req, res) => {
  const server = notesServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});

const methodNotAllowed = (_req, res) =>
  res.status(405).json({ jsonrpc: "2.0", error: { code: -32000, message: "Method not allowed." }, id: null });
app.get("/mcp", methodNotAllowed);
app.delete("/mcp", methodNotAllowed);

app.listen(port, host, (error) => {
  if (error) {
    console.error(`cannot listen on ${host}:${port}: ${error.message}`);
    process.exit(1);
  }
  console.log(`notes MCP server listening on http://${host}:${port}/mcp`);
});
