// The TypeScript SDK verifier (examples/typescript-verifier) end to end: the
// example server runs as its own process, registered in a real cola-api as a
// verify-only server, and the official TypeScript SDK client reaches it with
// Cola keys — as docs/verify.md shows it.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { after, before, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

import { Cola } from "./cola.mjs";

const EXAMPLE = new URL("../../examples/typescript-verifier/server.mjs", import.meta.url).pathname;

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

/** Polls `probe` until it returns true; fails after `deadlineMs`. */
async function poll(probe, { deadlineMs, what }) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() >= end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The example server, polled until it answers HTTP. */
async function startExample(env) {
  const port = await freePort();
  const log = [];
  const child = spawn(process.execPath, [EXAMPLE], {
    env: { PATH: process.env.PATH, PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (chunk) => log.push(String(chunk)));
  child.stderr.on("data", (chunk) => log.push(String(chunk)));
  const url = `http://127.0.0.1:${port}/mcp`;
  await poll(
    async () => {
      if (child.exitCode !== null) throw new Error(`the example exited (${child.exitCode}):\n${log.join("")}`);
      try {
        await fetch(url, { method: "GET" });
        return true;
      } catch {
        return false;
      }
    },
    { deadlineMs: 30_000, what: "the example server to listen" },
  );
  return { child, url, log };
}

let cola;
let example;
let admin;
let slug;
before(async () => {
  cola = await Cola.start();
  admin = cola.owner("admin");
  const registered = await cola.api("POST", "/api/mcp/servers", admin.token, {
    slug: "notes",
    name: "The notes example",
    url: null,
  });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  slug = registered.body.slug;
  const minted = await cola.api("POST", `/api/mcp/servers/${registered.body.id}/token`, admin.token);
  assert.equal(minted.status, 201, JSON.stringify(minted.body));
  assert.match(minted.body.token, /^colasrv_[0-9A-Za-z]{36}$/);
  example = await startExample({ COLA_URL: cola.base, COLA_SERVER_TOKEN: minted.body.token });
});
after(() => {
  example?.child.kill("SIGTERM");
  cola?.stop();
});

function grantedKey(permissions = {}, extra = {}) {
  return cola.createKey(admin.token, {
    name: `ts verifier ${Math.random().toString(36).slice(2, 8)}`,
    permissions: {
      read: true,
      write: false,
      servers: { [slug]: { allowed_tools: null, allowed_resources: null, allowed_prompts: null } },
      ...permissions,
    },
    ...extra,
  });
}

async function connect(key) {
  const transport = new StreamableHTTPClientTransport(new URL(example.url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  const client = new Client({ name: "cola-ts-verifier-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

/** A raw `initialize`: its status and headers (the body is read and dropped). */
async function initialize(key) {
  const response = await fetch(example.url, {
    method: "POST",
    headers: {
      ...(key ? { Authorization: `Bearer ${key}` } : {}),
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
    }),
  });
  await response.text();
  return response;
}

test("a granted key gets the example's tools with the official TypeScript client", async () => {
  const created = await grantedKey();
  const client = await connect(created.key);
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ["add_note", "list_notes", "whoami"]);
    const who = JSON.parse((await client.callTool({ name: "whoami", arguments: {} })).content[0].text);
    assert.equal(who.keyId, created.id);
    assert.equal(who.keyPrefix, created.key_prefix);
    assert.equal(who.userId, admin.user);
    assert.equal(who.tenantId, admin.tenant);
    const listed = await client.callTool({ name: "list_notes", arguments: {} });
    assert.ok(!listed.isError, JSON.stringify(listed));
    // A read-only key: the write tool refuses it.
    const added = await client.callTool({ name: "add_note", arguments: { text: "from a reader" } });
    assert.equal(added.isError, true);
    assert.match(added.content[0].text, /may not use add_note/);
  } finally {
    await client.close();
  }
});

test("a key with write permission adds a note", async () => {
  const created = await grantedKey({ write: true });
  const client = await connect(created.key);
  try {
    const added = await client.callTool({ name: "add_note", arguments: { text: "from a writer" } });
    assert.ok(!added.isError, JSON.stringify(added));
    assert.equal(added.content[0].text, "noted: from a writer");
  } finally {
    await client.close();
  }
});

test("a revoked key gets 401 from the example server", async () => {
  const created = await grantedKey();
  // Revoked before its first use: no answer can be cached for it.
  const revoked = await cola.api("DELETE", `/api/mcp/keys/${created.id}`, admin.token);
  assert.equal(revoked.status, 204);
  const response = await initialize(created.key);
  assert.equal(response.status, 401);
  const challenge = response.headers.get("www-authenticate");
  assert.match(challenge, /error="invalid_token"/);
  assert.doesNotMatch(challenge, /resource_metadata/);
  await assert.rejects(connect(created.key), (error) => error.code === 401);
});

test("keys Cola does not answer VALID for get 401", async () => {
  assert.equal((await initialize(null)).status, 401);
  assert.equal((await initialize("cola_" + "0".repeat(36))).status, 401);
  const ungranted = await cola.createKey(admin.token, { name: "no grant", permissions: { read: true, servers: {} } });
  assert.equal((await initialize(ungranted.key)).status, 401);
  const elsewhere = await grantedKey({}, { ip_whitelist: ["203.0.113.0/24"] });
  assert.equal((await initialize(elsewhere.key)).status, 401);
  // Admitted only if the verifier sent 127.0.0.1 as client_ip.
  const here = await grantedKey({}, { ip_whitelist: ["127.0.0.0/8"] });
  assert.equal((await initialize(here.key)).status, 200);
});
