// The official MCP TypeScript SDK client against /mcp: the README's snippet,
// what a key may see and do, and a revoked key refused.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

import { Cola } from "./cola.mjs";

let cola;
before(async () => {
  cola = await Cola.start();
});
after(() => cola?.stop());

/** Connects as the README shows: the key in an Authorization header. */
async function connect(key) {
  const transport = new StreamableHTTPClientTransport(cola.mcpUrl, {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  const client = new Client({ name: "cola-ts-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

test("whoami answers with the key's identity and permissions", async () => {
  const owner = cola.owner();
  const created = await cola.createKey(owner.token, { name: "ts whoami" });
  const client = await connect(created.key);
  try {
    const result = await client.callTool({ name: "whoami", arguments: {} });
    assert.equal(result.isError, false);
    assert.equal(result.structuredContent.key_id, created.id);
    assert.equal(result.structuredContent.key_prefix, created.key_prefix);
    assert.equal(result.structuredContent.tenant_id, owner.tenant);
    assert.equal(result.structuredContent.user_id, owner.user);
    assert.deepEqual(JSON.parse(result.content[0].text), result.structuredContent);
  } finally {
    await client.close();
  }
});

test("a read-only key lists only the read tools and cannot call the write tool", async () => {
  const owner = cola.owner();
  const reader = await cola.createKey(owner.token, { name: "ts reader" });
  const victim = await cola.createKey(owner.token, { name: "ts victim" });
  const client = await connect(reader.key);
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name), ["whoami", "list_api_keys"]);
    await assert.rejects(
      client.callTool({ name: "revoke_api_key", arguments: { id: victim.id } }),
      /Unknown tool: revoke_api_key/,
    );
  } finally {
    await client.close();
  }
  const { body } = await cola.api("GET", `/api/mcp/keys/${victim.id}`, owner.token);
  assert.equal(body.status, "active");
});

test("a write key revokes another key, which is refused from then on", async () => {
  const owner = cola.owner();
  const writer = await cola.createKey(owner.token, { name: "ts writer", permissions: { write: true } });
  const victim = await cola.createKey(owner.token, { name: "ts revoked" });
  const victimClient = await connect(victim.key);
  await victimClient.close();

  const client = await connect(writer.key);
  try {
    const result = await client.callTool({ name: "revoke_api_key", arguments: { id: victim.id } });
    assert.equal(result.isError, false);
    assert.deepEqual(result.structuredContent, { id: victim.id, revoked: true });
  } finally {
    await client.close();
  }
  await assert.rejects(connect(victim.key), (error) => error.code === 401);
});
