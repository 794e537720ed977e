// A real cola-api process for the tests: a fresh SQLite file, a random JWT
// secret and a free port on 127.0.0.1, started from $COLA_BIN and awaited by
// reading its "cola-api listening" log line.

import { spawn, execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const BIN = process.env.COLA_BIN ?? new URL("../../target/debug/cola-api", import.meta.url).pathname;

export class Cola {
  static async start(extraEnv = {}) {
    const dir = mkdtempSync(join(tmpdir(), "cola-ts-"));
    const env = {
      PATH: process.env.PATH,
      COLA_LISTEN: "127.0.0.1:0",
      COLA_DATABASE_URL: `sqlite://${join(dir, "cola.db")}?mode=rwc`,
      COLA_JWT_SECRET: randomBytes(32).toString("hex"),
      COLA_LOG_FORMAT: "json",
      RUST_LOG: "info",
      ...extraEnv,
    };
    const child = spawn(BIN, [], { env, stdio: ["ignore", "ignore", "pipe"] });
    const log = [];
    const address = await new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stderr });
      lines.on("line", (line) => {
        log.push(line);
        try {
          const event = JSON.parse(line);
          if (event.message === "cola-api listening") resolve(event.address);
        } catch {
          // not JSON: keep it in the log only
        }
      });
      child.on("exit", (code) => reject(new Error(`cola-api exited (${code}):\n${log.join("\n")}`)));
    });
    return new Cola(child, dir, env, `http://${address}`);
  }

  constructor(child, dir, env, base) {
    Object.assign(this, { child, dir, env, base });
  }

  get mcpUrl() {
    return new URL("/mcp", this.base);
  }

  /** A management JWT for a fresh user (a member unless `role` says otherwise) of a fresh tenant, from `cola-api dev-token`. */
  owner(role = "member") {
    const tenant = randomUUID();
    const user = randomUUID();
    const token = execFileSync(BIN, ["dev-token", "--tenant", tenant, "--user", user, "--role", role], {
      env: this.env,
      encoding: "utf8",
    }).trim();
    return { tenant, user, token };
  }

  async api(method, path, token, body) {
    const response = await fetch(new URL(path, this.base), {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async createKey(token, body) {
    const { status, body: created } = await this.api("POST", "/api/mcp/keys", token, body);
    if (status !== 201) throw new Error(`create answered ${status}: ${JSON.stringify(created)}`);
    return created;
  }

  stop() {
    this.child.kill("SIGTERM");
    rmSync(this.dir, { recursive: true, force: true });
  }
}
