// Cola console: a small single page over the REST API (/api/...). No build
// step, no framework. The session cookie authenticates every call; writes
// carry the session's CSRF token in X-CSRF-Token. Text from the API is only
// ever set as text (never as HTML), so nothing in a key name can run here.

const main = document.getElementById("main");
const errorBox = document.getElementById("error");
const statusBox = document.getElementById("status");
let session = null;

// ---- DOM helpers ---------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
  main.focus();
}

function say(message) {
  statusBox.textContent = message;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
}

function showError(error) {
  const problem = error && error.problem;
  const detail = problem && problem.detail ? problem.detail : String(error && error.message ? error.message : error);
  const parts = [h("strong", {}, problem && problem.title ? `${problem.title}: ` : "Error: "), detail];
  if (problem && problem.errors) {
    parts.push(h("ul", {}, Object.entries(problem.errors).map(([field, messages]) =>
      h("li", {}, h("code", {}, field), " — ", messages.join("; ")))));
  }
  errorBox.replaceChildren(...parts);
  errorBox.hidden = false;
}

function when(value) {
  if (!value) return "never";
  const date = new Date(value);
  return h("time", { datetime: value, title: value }, date.toLocaleString());
}

function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

// ---- API -----------------------------------------------------------------

class ProblemError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || { title: `HTTP ${status}`, detail: `the server answered ${status}` };
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session && session.csrf_token) headers["X-CSRF-Token"] = session.csrf_token;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    throw new ProblemError(response.status, data);
  }
  return data;
}

// A copy button for `what` ("the key"): its accessible name starts with
// its visible text, whatever that says now ("Copy the key", "Copied the
// key"), so a person who says what they see reaches it (WCAG 2.5.3).
function copyButton(getText, what) {
  const button = h("button", { type: "button" });
  const label = (visible) => {
    button.textContent = visible;
    button.setAttribute("aria-label", `${visible} ${what}`);
  };
  label("Copy");
  button.addEventListener("click", async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
      label("Copied");
      say(`Copied ${what} to the clipboard.`);
    } catch {
      label("Select and copy");
      say("The clipboard is not available here: select the text and copy it.");
    }
  });
  return button;
}

function confirmDialog(title, text, confirmLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// ---- The secret, shown once ---------------------------------------------

function snippets(key) {
  const url = `${session.public_url}/mcp`;
  const server = (extra) => JSON.stringify(extra, null, 2);
  return [
    ["Claude Code", `claude mcp add --transport http cola ${url} --header "Authorization: Bearer ${key}"`],
    ["Cursor (.cursor/mcp.json)", server({ mcpServers: { cola: { type: "http", url, headers: { Authorization: `Bearer ${key}` } } } })],
    ["VS Code (.vscode/mcp.json)", server({ servers: { cola: { type: "http", url, headers: { Authorization: `Bearer ${key}` } } } })],
  ];
}

function showSecret(created, afterClose) {
  const dialog = document.getElementById("secret");
  const body = document.getElementById("secret-body");
  const key = created.key;
  body.replaceChildren(
    h("p", {}, "Key ", h("strong", {}, created.name), " (", h("code", {}, created.key_prefix), "):"),
    h("div", { class: "secret-value" },
      h("output", { id: "secret-key", "aria-label": "The new key" }, key),
      copyButton(() => key, "the key")),
    h("h3", {}, "Connect a client"),
    ...snippets(key).map(([title, text]) => h("div", { class: "snippet" },
      h("div", { class: "snippet-head" }, h("strong", {}, title), copyButton(() => text, `the ${title} snippet`)),
      h("pre", { tabindex: "0", "aria-label": `${title} snippet` }, text))),
  );
  const close = document.getElementById("secret-close");
  const onClose = () => {
    // Gone for good: the secret leaves the page with the dialog.
    body.replaceChildren();
    dialog.removeEventListener("close", onClose);
    afterClose();
  };
  dialog.addEventListener("close", onClose);
  close.onclick = () => dialog.close();
  dialog.showModal();
  close.focus();
}

// ---- Grants --------------------------------------------------------------

function listText(list, all, none) {
  if (list === null || list === undefined) return all;
  if (list.length === 0) return none;
  return list.join(", ");
}

function grants(permissions) {
  const flags = [permissions.read ? "read" : null, permissions.write ? "write" : null].filter(Boolean).join(" + ");
  const parts = [
    h("div", {}, flags || "nothing"),
    h("div", { class: "muted" }, "tools: ", listText(permissions.allowed_tools, "all", "none")),
    h("div", { class: "muted" }, "resources: ", listText(permissions.allowed_resources, "all", "none")),
  ];
  const servers = permissions.servers ? Object.entries(permissions.servers) : [];
  parts.push(h("div", { class: "muted" }, "servers: ",
    servers.length === 0 ? "none" : servers.map(([slug, grant]) =>
      `${slug} (tools: ${listText(grant.allowed_tools, "all", "none")})`).join("; ")));
  return parts;
}

function splitList(text) {
  const items = text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  return items;
}

// A list field: blank = null (everything the flags allow).
function optionalList(text) {
  const items = splitList(text);
  return items.length === 0 ? null : items;
}

// ---- Pages ---------------------------------------------------------------

function signInPage() {
  const how = {
    dev: ["Dev mode signs you in as the demo admin.", h("a", { class: "button primary", href: "/console/login" }, "Sign in as the demo admin")],
    oidc: ["Sign in with your organisation's identity provider.", h("a", { class: "button primary", href: "/console/login" }, "Sign in")],
    unavailable: ["Sign-in is not configured. An operator sets COLA_OIDC_ISSUER, COLA_OIDC_CLIENT_ID and COLA_OIDC_CLIENT_SECRET; for a local demo, run cola-api --dev.", null],
  }[session ? session.sign_in : "unavailable"];
  show(h("div", { class: "notice" }, h("h1", {}, "Cola console"), h("p", {}, how[0]), how[1]));
}

async function keysPage(params) {
  const admin = session.role === "admin";
  const status = params.get("status") || "";
  const filter = h("select", { id: "status-filter" },
    ["", "active", "revoked", "expired"].map((value) =>
      h("option", { value, selected: value === status }, value || "every status")));
  filter.addEventListener("change", () => { location.hash = `#/keys${filter.value ? `?status=${filter.value}` : ""}`; });
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "100" });
    if (status) query.set("status", status);
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `/api/mcp/keys?${query}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 1000);

  const header = [
    h("h1", {}, admin ? "Keys of your tenant" : "Your keys"),
    h("div", { class: "toolbar" },
      h("div", {}, h("label", { for: "status-filter" }, "Show"), filter),
      h("a", { class: "button primary", href: "#/keys/new" }, "New key")),
  ];
  if (items.length === 0) {
    show(...header, h("div", { class: "card empty" },
      h("p", {}, status ? `No ${status} keys.` : "No keys yet."),
      h("p", { class: "muted" }, "A key lets Claude Code, Cursor, VS Code or any MCP client reach Cola. Create one, then paste the snippet Cola shows you."),
      h("a", { class: "button primary", href: "#/keys/new" }, "Create your first key")));
    return;
  }
  const table = (keys) => h("table", {},
    h("caption", { class: "muted" }, `${keys.length} key${keys.length === 1 ? "" : "s"}`),
    h("thead", {}, h("tr", {}, ["Name", "Prefix", "Status", "Grants", "Last used", "Uses", "Expires"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, keys.map((key) => h("tr", {},
      h("td", {}, h("a", { href: `#/keys/${key.id}` }, key.name), key.description ? h("div", { class: "muted" }, key.description) : null),
      h("td", {}, h("code", {}, key.key_prefix)),
      h("td", {}, badge(key.status)),
      h("td", {}, grants(key.permissions)),
      h("td", {}, when(key.last_used_at)),
      h("td", {}, String(key.usage_count)),
      h("td", {}, when(key.expires_at))))));
  if (!admin) {
    show(...header, table(items));
    return;
  }
  // Admins: every key of the tenant, by owner.
  const owners = new Map();
  for (const key of items) {
    if (!owners.has(key.user_id)) owners.set(key.user_id, []);
    owners.get(key.user_id).push(key);
  }
  const sections = [...owners.entries()].map(([owner, keys]) => h("section", { "aria-labelledby": `owner-${owner}` },
    h("div", { class: "owner" },
      h("h2", { id: `owner-${owner}` }, "Owner ", h("code", {}, owner), owner === session.user_id ? " (you)" : ""),
      h("button", { type: "button", onclick: () => offboard(owner) }, "Offboard this user")),
    table(keys)));
  show(...header, ...sections);
}

async function offboard(userId) {
  const sure = await confirmDialog("Offboard this user?",
    `Every active key of ${userId} is revoked at once. This cannot be undone.`, "Revoke all their keys");
  if (!sure) return;
  const result = await api("DELETE", `/api/mcp/users/${encodeURIComponent(userId)}/keys`);
  say(`Revoked ${result && typeof result.revoked === "number" ? result.revoked : 0} key(s) of ${userId}.`);
  await route();
}

async function loadServers() {
  try {
    const page = await api("GET", "/api/mcp/servers?limit=100");
    return { servers: page.items, problem: null };
  } catch (error) {
    return { servers: [], problem: error };
  }
}

function permissionFields(permissions, servers, serverProblem) {
  const p = permissions || { read: true, write: false, allowed_tools: null, allowed_resources: null };
  const granted = p.servers || {};
  const serverRows = servers.map((server) => {
    const grant = granted[server.slug];
    return h("div", { class: "server-grant" },
      h("label", { class: "check" }, h("input", { type: "checkbox", name: `server:${server.slug}`, checked: !!grant }), `Grant ${server.name} (`, h("code", {}, server.slug), ")"),
      h("label", { for: `server-tools-${server.slug}` }, `Tools on ${server.slug}`, h("span", { class: "hint" }, "Comma-separated; a trailing * matches a prefix; blank = every tool the flags allow")),
      h("input", { type: "text", id: `server-tools-${server.slug}`, name: `server-tools:${server.slug}`, value: grant && grant.allowed_tools ? grant.allowed_tools.join(", ") : "" }));
  });
  return [
    h("fieldset", {}, h("legend", {}, "What the key may do"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "read", checked: p.read }), "Read (list and read; read-only tools)"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "write", checked: p.write }), "Write (tools that change things)"),
      h("label", { for: "allowed_tools" }, "Allowed tools", h("span", { class: "hint" }, "Exact tools (whoami, list_api_keys, revoke_api_key), comma-separated; blank = every tool the flags allow")),
      h("input", { type: "text", id: "allowed_tools", name: "allowed_tools", value: p.allowed_tools ? p.allowed_tools.join(", ") : "" }),
      h("label", { for: "allowed_resources" }, "Allowed resources", h("span", { class: "hint" }, "URIs; a trailing * matches a prefix; blank = every resource")),
      h("input", { type: "text", id: "allowed_resources", name: "allowed_resources", value: p.allowed_resources ? p.allowed_resources.join(", ") : "" })),
    h("fieldset", {}, h("legend", {}, "Servers behind the gateway"),
      serverProblem ? h("p", { class: "muted" }, `Servers cannot be listed: ${serverProblem.message}`)
        : servers.length === 0 ? h("p", { class: "muted" }, "No servers are registered. An admin adds them under Servers.")
          : serverRows),
  ];
}

function readPermissions(form, servers, previous) {
  const data = new FormData(form);
  const permissions = {
    read: data.get("read") === "on",
    write: data.get("write") === "on",
    allowed_tools: optionalList(String(data.get("allowed_tools") || "")),
    allowed_resources: optionalList(String(data.get("allowed_resources") || "")),
  };
  // Grants on servers this page could not list are kept as they were.
  const kept = previous && previous.servers ? { ...previous.servers } : {};
  const grants = {};
  let any = false;
  for (const server of servers) delete kept[server.slug];
  for (const [slug, grant] of Object.entries(kept)) { grants[slug] = grant; any = true; }
  for (const server of servers) {
    if (data.get(`server:${server.slug}`) === "on") {
      const old = previous && previous.servers && previous.servers[server.slug];
      grants[server.slug] = {
        allowed_tools: optionalList(String(data.get(`server-tools:${server.slug}`) || "")),
        allowed_resources: old ? old.allowed_resources ?? null : null,
        allowed_prompts: old ? old.allowed_prompts ?? null : null,
      };
      any = true;
    }
  }
  // An edit always says which grants the key keeps: a PATCH that leaves
  // `servers` out keeps the stored ones, so unchecking the last grant would
  // otherwise change nothing.
  if (any || previous) permissions.servers = grants;
  return permissions;
}

async function createPage() {
  const { servers, problem } = await loadServers();
  const form = h("form", { class: "card", novalidate: true },
    h("label", { for: "name" }, "Name", h("span", { class: "hint" }, "Where the key is used, e.g. “Claude Code on my laptop”")),
    h("input", { type: "text", id: "name", name: "name", required: true, maxlength: "100", autocomplete: "off" }),
    h("label", { for: "description" }, "Description", h("span", { class: "hint" }, "Optional")),
    h("textarea", { id: "description", name: "description", maxlength: "500" }),
    permissionFields(null, servers, problem),
    h("label", { for: "ip_whitelist" }, "IP allow-list", h("span", { class: "hint" }, "Addresses or CIDRs, comma-separated; blank = any address")),
    h("input", { type: "text", id: "ip_whitelist", name: "ip_whitelist", autocomplete: "off" }),
    h("label", { for: "expires_in_days" }, "Expires in (days)"),
    h("input", { type: "number", id: "expires_in_days", name: "expires_in_days", min: "1", value: "90" }),
    h("div", { class: "actions" },
      h("a", { class: "button", href: "#/keys" }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, "Create key")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name") || ""),
      permissions: readPermissions(form, servers, null),
      ip_whitelist: splitList(String(data.get("ip_whitelist") || "")),
    };
    const description = String(data.get("description") || "").trim();
    if (description) body.description = description;
    const days = String(data.get("expires_in_days") || "").trim();
    if (days) body.expires_in_days = Number(days);
    try {
      const created = await api("POST", "/api/mcp/keys", body);
      say(`Key “${created.name}” created.`);
      showSecret(created, () => { location.hash = `#/keys/${created.id}`; });
    } catch (error) {
      showError(error);
    }
  });
  show(h("h1", {}, "New key"), form);
  document.getElementById("name").focus();
}

async function keyPage(id) {
  const [key, events] = await Promise.all([
    api("GET", `/api/mcp/keys/${encodeURIComponent(id)}`),
    api("GET", `/api/mcp/keys/${encodeURIComponent(id)}/events`),
  ]);
  const active = key.status === "active";
  const dl = h("dl", { class: "facts" });
  for (const [term, value] of [
    ["Prefix", h("code", {}, key.key_prefix)], ["Status", badge(key.status)], ["Owner", h("code", {}, key.user_id)],
    ["Grants", h("div", {}, grants(key.permissions))],
    ["IP allow-list", key.ip_whitelist.length ? key.ip_whitelist.join(", ") : "any address"],
    ["Uses", String(key.usage_count)], ["Last used", when(key.last_used_at)], ["Created", when(key.created_at)],
    ["Expires", when(key.expires_at)], ["Revoked", key.revoked_at ? h("span", {}, when(key.revoked_at), " by ", h("code", {}, key.revoked_by)) : "—"],
  ]) dl.append(h("dt", {}, term), h("dd", {}, value));

  const sections = [h("h1", {}, key.name), h("div", { class: "card" }, dl)];
  if (active) {
    const revoke = h("button", { type: "button", class: "danger", id: "revoke" }, "Revoke key");
    revoke.addEventListener("click", async () => {
      clearError();
      const sure = await confirmDialog("Revoke this key?",
        `“${key.name}” (${key.key_prefix}) stops working on its next request. This cannot be undone.`, "Revoke");
      if (!sure) return;
      try {
        await api("DELETE", `/api/mcp/keys/${encodeURIComponent(key.id)}`);
        say(`Key “${key.name}” revoked.`);
        await keyPage(id);
      } catch (error) { showError(error); }
    });
    const grace = h("input", { type: "number", id: "grace", name: "grace", min: "0", max: "86400", value: "0" });
    const rotate = h("form", { class: "card", "aria-labelledby": "rotate-title" },
      h("h2", { id: "rotate-title" }, "Rotate"),
      h("p", { class: "muted" }, "A new key with the same name, permissions and allow-list replaces this one."),
      h("label", { for: "grace" }, "Grace period (seconds)", h("span", { class: "hint" }, "How long this key keeps working, 0–86400")),
      grace,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Rotate key")));
    rotate.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      try {
        const created = await api("POST", `/api/mcp/keys/${encodeURIComponent(key.id)}/rotate`, { grace_period_secs: Number(grace.value || 0) });
        say(`Key “${key.name}” rotated.`);
        showSecret(created, () => { location.hash = `#/keys/${created.id}`; });
      } catch (error) { showError(error); }
    });

    const { servers, problem } = await loadServers();
    const edit = h("form", { class: "card", "aria-labelledby": "edit-title" },
      h("h2", { id: "edit-title" }, "Edit"),
      h("label", { for: "name" }, "Name"),
      h("input", { type: "text", id: "name", name: "name", value: key.name, required: true, maxlength: "100" }),
      h("label", { for: "description" }, "Description"),
      h("textarea", { id: "description", name: "description", maxlength: "500" }, key.description || ""),
      permissionFields(key.permissions, servers, problem),
      h("label", { for: "ip_whitelist" }, "IP allow-list", h("span", { class: "hint" }, "Addresses or CIDRs, comma-separated; blank = any address")),
      h("input", { type: "text", id: "ip_whitelist", name: "ip_whitelist", value: key.ip_whitelist.join(", ") }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save changes")));
    edit.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      const data = new FormData(edit);
      const description = String(data.get("description") || "").trim();
      try {
        await api("PATCH", `/api/mcp/keys/${encodeURIComponent(key.id)}/metadata`, {
          name: String(data.get("name") || ""), description: description || null,
        });
        await api("PATCH", `/api/mcp/keys/${encodeURIComponent(key.id)}/permissions`, {
          permissions: readPermissions(edit, servers, key.permissions),
          ip_whitelist: splitList(String(data.get("ip_whitelist") || "")),
        });
        say("Changes saved.");
        await keyPage(id);
      } catch (error) { showError(error); }
    });
    sections.push(h("div", { class: "row-actions" }, revoke), edit, rotate);
  }
  sections.push(h("h2", { id: "audit" }, "Audit trail"),
    events.items.length === 0 ? h("p", { class: "muted" }, "No events.") :
      h("table", { "aria-labelledby": "audit" },
        h("thead", {}, h("tr", {}, ["When", "Event", "By", "Details"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, events.items.map((event) => h("tr", {},
          h("td", {}, when(event.occurred_at)), h("td", {}, h("code", {}, event.type)),
          h("td", {}, h("code", {}, event.actor_user_id)),
          h("td", {}, h("code", { class: "mono" }, JSON.stringify(event.data))))))));
  sections.push(h("p", {}, h("a", { href: "#/keys" }, "← All keys")));
  show(...sections);
}

async function serversPage() {
  const admin = session.role === "admin";
  const { servers, problem } = await loadServers();
  const parts = [h("h1", {}, "Servers")];
  if (problem) {
    parts.push(h("div", { class: "card" }, h("p", {}, `Servers are not available: ${problem.message}`)));
  } else if (servers.length === 0) {
    parts.push(h("div", { class: "card empty" }, h("p", {}, "No servers yet."),
      h("p", { class: "muted" }, admin ? "Register a tenant MCP server below; keys are then granted access to it by slug." : "An admin registers the tenant's MCP servers here.")));
  } else {
    parts.push(h("table", {},
      h("thead", {}, h("tr", {}, ["Slug", "Name", "URL", "Headers", "Identity", "Timeout", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, servers.map((server) => h("tr", {},
        h("td", {}, h("code", {}, server.slug)), h("td", {}, server.name), h("td", {}, server.url || "verify-only"),
        h("td", {}, (server.header_names || []).join(", ") || "—"), h("td", {}, server.forward_identity ? "forwarded" : "—"),
        h("td", {}, `${server.timeout_secs} s`),
        h("td", {}, admin ? h("button", { type: "button", class: "danger", onclick: () => deleteServer(server) }, "Delete") : null))))));
  }
  if (admin) {
    const form = h("form", { class: "card", "aria-labelledby": "new-server" },
      h("h2", { id: "new-server" }, "Register a server"),
      h("label", { for: "slug" }, "Slug", h("span", { class: "hint" }, "1–40 of a–z, 0–9 and -; the path segment of /mcp/{slug}")),
      h("input", { type: "text", id: "slug", name: "slug", required: true, maxlength: "40" }),
      h("label", { for: "server-name" }, "Name"),
      h("input", { type: "text", id: "server-name", name: "name", required: true, maxlength: "100" }),
      h("label", { for: "url" }, "Upstream URL", h("span", { class: "hint" }, "Its Streamable HTTP endpoint; blank = verify-only")),
      h("input", { type: "url", id: "url", name: "url" }),
      h("label", { for: "headers" }, "Headers", h("span", { class: "hint" }, "One “Name: value” a line, sent upstream; stored encrypted, never shown again")),
      h("textarea", { id: "headers", name: "headers", autocomplete: "off" }),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "forward_identity" }), "Forward the caller's identity (X-Cola-Identity)"),
      h("label", { for: "timeout" }, "Timeout (seconds)"),
      h("input", { type: "number", id: "timeout", name: "timeout_secs", min: "1", max: "300", value: "30" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Register server")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      const data = new FormData(form);
      const headers = {};
      for (const line of String(data.get("headers") || "").split("\n")) {
        const at = line.indexOf(":");
        if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      const body = {
        slug: String(data.get("slug") || ""), name: String(data.get("name") || ""),
        url: String(data.get("url") || "").trim() || null,
        forward_identity: data.get("forward_identity") === "on",
        timeout_secs: Number(data.get("timeout_secs") || 30),
      };
      if (Object.keys(headers).length) body.headers = headers;
      try {
        const server = await api("POST", "/api/mcp/servers", body);
        say(`Server “${server.slug}” registered.`);
        await serversPage();
      } catch (error) { showError(error); }
    });
    parts.push(form);
  }
  show(...parts);
}

async function deleteServer(server) {
  clearError();
  const sure = await confirmDialog("Delete this server?",
    `/mcp/${server.slug} answers 404 from the next request, and every key's grant on it stops working.`, "Delete server");
  if (!sure) return;
  try {
    await api("DELETE", `/api/mcp/servers/${encodeURIComponent(server.id)}`);
    say(`Server “${server.slug}” deleted.`);
    await serversPage();
  } catch (error) { showError(error); }
}

async function usersPage() {
  const input = h("input", { type: "text", id: "user-id", name: "user_id", required: true, autocomplete: "off" });
  const form = h("form", { class: "card" },
    h("p", {}, "Offboarding revokes every active key of a user at once — for someone who leaves, or a laptop that was lost."),
    h("label", { for: "user-id" }, "User id", h("span", { class: "hint" }, "As the owner column of the keys list shows it")),
    input,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Offboard user")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    try { await offboard(input.value.trim()); } catch (error) { showError(error); }
  });
  show(h("h1", {}, "Offboard a user"), form);
}

// ---- Frame ---------------------------------------------------------------

function frame() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session || !session.signed_in) {
    nav.replaceChildren();
    who.replaceChildren();
    return;
  }
  const links = [["#/keys", "Keys"], ["#/servers", "Servers"]];
  if (session.role === "admin") links.push(["#/users", "Offboard"]);
  const current = location.hash.split("?")[0] || "#/keys";
  nav.replaceChildren(...links.map(([href, text]) =>
    h("a", { href, "aria-current": current.startsWith(href) ? "page" : null }, text)));
  const signOut = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOut.addEventListener("click", async () => {
    try {
      await api("POST", "/console/logout");
      session = null;
      location.hash = "";
      await start();
    } catch (error) { showError(error); }
  });
  who.replaceChildren(h("span", {}, session.display_name || session.user_id, " · ", session.role), signOut);
}

async function route() {
  clearError();
  frame();
  if (!session || !session.signed_in) {
    signInPage();
    return;
  }
  const [path, query] = (location.hash.slice(1) || "/keys").split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path === "/keys" || path === "/" || path === "") await keysPage(params);
    else if (path === "/keys/new") await createPage();
    else if (path.startsWith("/keys/")) await keyPage(path.slice("/keys/".length));
    else if (path === "/servers") await serversPage();
    else if (path === "/users") await usersPage();
    else show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/keys" }, "Go to your keys")));
  } catch (error) {
    if (error instanceof ProblemError && error.status === 401) {
      // The session ended (expired, or signed out elsewhere).
      session = { signed_in: false, sign_in: session ? session.sign_in : "unavailable" };
      frame();
      signInPage();
      showError(error);
      return;
    }
    showError(error);
  }
}

async function start() {
  try {
    session = await api("GET", "/console/session");
  } catch (error) {
    session = null;
    showError(error);
  }
  await route();
}

window.addEventListener("hashchange", route);
start();
