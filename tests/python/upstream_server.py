"""An upstream MCP server for the gateway tests, built with the official
Python SDK (`mcp.server.mcpserver.MCPServer`). It speaks both protocol eras
(the handshake era with sessions and SSE answers, and 2026-07-28) and
records every message and the headers it received, so a test can prove
what did and did not reach it.

    python upstream_server.py PORT [--json] [--require-header NAME=VALUE]

`GET /record` answers the record; `DELETE /record` clears it.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

RECORD: list[dict] = []

server = MCPServer("upstream-under-test", instructions="gateway test upstream")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def search(query: str) -> str:
    """Searches (read-only)."""
    return f"results for {query}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def search_archive(query: str) -> str:
    """Searches the archive (read-only)."""
    return f"archived results for {query}"


@server.tool()
def create_issue(title: str) -> str:
    """Creates an issue (writes; no annotation)."""
    return f"created {title}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
def delete_repo(name: str) -> str:
    """Deletes a repository (writes)."""
    return f"deleted {name}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def count_slowly(steps: int, ctx: Context) -> str:
    """Counts to `steps`, reporting progress at every step."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return f"counted to {steps}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo_headers(ctx: Context) -> str:
    """Reports the HTTP request headers this call arrived with."""
    return json.dumps(dict(ctx.headers or {}))


@server.resource("docs://public/readme")
def readme() -> str:
    return "public readme"


@server.resource("docs://secret/plan")
def plan() -> str:
    return "secret plan"


@server.resource("docs://public/pages/{name}")
def page(name: str) -> str:
    return f"page {name}"


@server.resource("docs://secret/pages/{name}")
def secret_page(name: str) -> str:
    return f"secret page {name}"


@server.prompt()
def greet(name: str) -> str:
    return f"Say hello to {name}"


@server.prompt()
def secret_prompt() -> str:
    return "the secret prompt"


def names_of(message: dict) -> dict:
    params = message.get("params") or {}
    entry = {"method": message.get("method")}
    for field in ("name", "uri"):
        if field in params:
            entry[field] = params[field]
    if "ref" in params:
        entry["ref"] = params["ref"]
    if "id" in message and "method" not in message:
        entry["response_to"] = message["id"]
    return entry


class Recorder:
    """ASGI middleware: records each POST's JSON-RPC message and the
    headers of every request to the MCP endpoint, then replays the body."""

    def __init__(self, app, required: tuple[str, str] | None):
        self.app = app
        self.required = required

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/record":
            request = Request(scope, receive)
            if request.method == "DELETE":
                RECORD.clear()
                return await Response(status_code=204)(scope, receive, send)
            return await JSONResponse(RECORD)(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if self.required is not None:
            name, value = self.required
            if headers.get(name.lower()) != value:
                return await Response(status_code=401, headers={"www-authenticate": 'Bearer realm="upstream-secret"'})(
                    scope, receive, send
                )
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        entry: dict = {"http_method": scope["method"], "headers": headers}
        if body:
            try:
                entry.update(names_of(json.loads(body)))
            except ValueError:
                entry["unparsed"] = True
        RECORD.append(entry)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--json", action="store_true", help="answer with JSON instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no handshake-era sessions")
    parser.add_argument("--require-header", default=None, help="NAME=VALUE every request must carry")
    args = parser.parse_args()
    required = tuple(args.require_header.split("=", 1)) if args.require_header else None
    from mcp.server.transport_security import TransportSecuritySettings

    app = server.streamable_http_app(
        json_response=args.json,
        stateless_http=args.stateless,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    config = uvicorn.Config(Recorder(app, required), host="127.0.0.1", port=args.port, log_level="warning")
    print(f"READY {args.port}", flush=True)
    anyio.run(uvicorn.Server(config).serve)


if __name__ == "__main__":
    sys.exit(main())
