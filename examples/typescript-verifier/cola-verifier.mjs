// Cola keys for an MCP server built with the official TypeScript SDK.
//
// `ColaTokenVerifier` is the SDK's `OAuthTokenVerifier`: `requireBearerAuth`
// calls its `verifyAccessToken(token)`, which asks Cola's
// `POST /api/mcp/verify` and answers an `AuthInfo` for a VALID key; anything
// else throws `InvalidTokenError`, which the middleware answers with 401.
// `rememberClientAddress` is the express middleware (mounted before
// `requireBearerAuth`) that lets it tell Cola the end client's address.
// Copy this file next to your server; it needs only the SDK (Node 20+ fetch).

import { AsyncLocalStorage } from "node:async_hooks";
import { createHash } from "node:crypto";

import { InvalidTokenError } from "@modelcontextprotocol/sdk/server/auth/errors.js";

// `verifyAccessToken` gets the token only, so the peer travels here.
const clientAddress = new AsyncLocalStorage();

/**
 * Express middleware: remembers the TCP peer of the request for the
 * verifier. Behind your own reverse proxy, store the address from its
 * forwarding header instead, and only when the peer is that proxy: a client
 * must not choose its own address.
 */
export function rememberClientAddress(req, _res, next) {
  const peer = req.socket.remoteAddress ?? null;
  // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
  clientAddress.run(peer?.startsWith("::ffff:") ? peer.slice(7) : peer, next);
}

/**
 * Verifies `cola_` keys with Cola on behalf of one registered server.
 * `colaUrl` is Cola's base URL, `serverToken` the `colasrv_` token minted for
 * this server (`POST /api/mcp/servers/{id}/token`). A VALID answer is reused
 * for at most its `cache_ttl_ms`; any other answer is never kept, so a revoked
 * key is refused as soon as Cola says so.
 */
export class ColaTokenVerifier {
  #verifyUrl;
  #serverToken;
  #maxCached;
  #now;
  #cache = new Map(); // sha256(client address, key) -> { until, authInfo }

  constructor(colaUrl, serverToken, { maxCached = 10_000, now = () => performance.now() } = {}) {
    this.#verifyUrl = new URL("/api/mcp/verify", colaUrl).href;
    this.#serverToken = serverToken;
    this.#maxCached = maxCached;
    this.#now = now;
  }

  async verifyAccessToken(token) {
    if (!token.startsWith("cola_")) throw new InvalidTokenError("not a Cola key");
    const ip = clientAddress.getStore() ?? null;
    // The answer depends on the address (the key's allow-list), so both make
    // the cache key; hashing keeps the raw key out of the map.
    const slot = createHash("sha256").update(`${ip}\n${token}`).digest("base64");
    const now = this.#now();
    const cached = this.#cache.get(slot);
    if (cached && cached.until > now) return cached.authInfo;
    this.#cache.delete(slot);

    const answer = await this.#ask(token, ip);
    if (answer?.code !== "VALID") throw new InvalidTokenError("key refused");
    const authInfo = toAuthInfo(token, answer);
    const ttlMs = Math.max(0, Number(answer.cache_ttl_ms) || 0);
    if (ttlMs > 0) this.#remember(slot, now + ttlMs, authInfo);
    return authInfo;
  }

  async #ask(key, ip) {
    const body = ip === null ? { key } : { key, client_ip: ip };
    let response;
    try {
      response = await fetch(this.#verifyUrl, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.#serverToken}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
    } catch (error) {
      // Fail closed: no answer from Cola admits nobody.
      console.warn(`Cola verify unreachable: ${error.name}`);
      return null;
    }
    const answer = await response.json().catch(() => null);
    if (response.status === 200) return answer;
    // 429 (the key's rate limit, or too many failures from this client),
    // 401 (our server token), 400, 503: the key is not admitted either way.
    console.warn(`Cola verify answered ${response.status} ${answer?.code ?? ""}`);
    return null;
  }

  #remember(slot, until, authInfo) {
    if (this.#cache.size >= this.#maxCached) {
      const now = this.#now();
      for (const [stale, entry] of this.#cache) if (entry.until <= now) this.#cache.delete(stale);
      if (this.#cache.size >= this.#maxCached) this.#cache.clear();
    }
    this.#cache.set(slot, { until, authInfo });
  }
}

function toAuthInfo(token, answer) {
  const { permissions } = answer;
  return {
    token,
    clientId: answer.key_prefix ?? answer.key_id,
    scopes: ["read", "write"].filter((flag) => permissions[flag]),
    expiresAt: Math.floor(Date.parse(answer.expires_at) / 1000),
    extra: {
      tenantId: answer.tenant_id,
      userId: answer.user_id,
      keyId: answer.key_id,
      keyPrefix: answer.key_prefix,
      permissions,
    },
  };
}

/**
 * Whether the key behind `authInfo` (a tool handler's `extra.authInfo`) may
 * call tool `name`, by the rule Cola applies at its gateway: a read-only tool
 * needs `read`, any other `write`, and the server's grant (`allowed_tools`:
 * null = all, a trailing `*` matches a prefix) must name it.
 */
export function mayUseTool(authInfo, name, { readOnly }) {
  if (!authInfo?.scopes.includes(readOnly ? "read" : "write")) return false;
  const allowed = authInfo.extra?.permissions?.allowed_tools;
  if (allowed == null) return true;
  return allowed.some((p) => p === name || (p.endsWith("*") && name.startsWith(p.slice(0, -1))));
}
