"""An upstream MCP server for the gateway tests, built with the official
Python SDK (`mcp.server.mcpserver.MCPServer`). It speaks both protocol eras
(the handshake era with sessions and SSE answers, and 2026-07-28) and
records every message and the headers it received, so a test can prove
what did and did not reach it.

    python upstream_server.py PORT [--json] [--stateless] [--require-header NAME=VALUE]
                              [--no-record] [--reuse-port]

`GET /record` answers the record; `DELETE /record` clears it. Besides one
entry per HTTP request, some tools record events of their own (an entry
with `event` and the `tag` they were called with), so a test can see what
happened to a call inside the upstream: `stream_slowly` records
`stream_started`, then `stream_finished` or `stream_cancelled`.

`--no-record` records no requests (the tools' own events still are), for
benchmarks; `--reuse-port` binds with SO_REUSEPORT, so that several
stateless processes can share one port.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent, ToolAnnotations
from pydantic import BaseModel
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


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def stream_slowly(steps: int, ctx: Context, interval_ms: int = 200, tag: str = "") -> str:
    """Reports progress every `interval_ms` for `steps` steps (an SSE answer
    that lasts steps x interval). Records `stream_started`, then
    `stream_finished`, or `stream_cancelled` when the call is cancelled (in
    2026-07-28: its response stream was closed)."""
    RECORD.append({"event": "stream_started", "tag": tag})
    step = 0
    try:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
            await anyio.sleep(interval_ms / 1000)
    except anyio.get_cancelled_exc_class():
        RECORD.append({"event": "stream_cancelled", "tag": tag, "step": step})
        raise
    RECORD.append({"event": "stream_finished", "tag": tag})
    return f"streamed {steps} steps"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def ask_model(prompt: str, ctx: Context) -> str:
    """Asks the client's model (`sampling/createMessage`) and reports its answer."""
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=64,
        related_request_id=ctx.request_id,
    )
    content = result.content
    text = content.text if isinstance(content, TextContent) else json.dumps(content, default=str)
    return f"model {result.model} answered: {text}"


class Answer(BaseModel):
    answer: str


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def ask_user(question: str, ctx: Context) -> str:
    """Asks the client's user (`elicitation/create`, form mode) and reports the answer."""
    result = await ctx.elicit(question, Answer)
    if result.action == "accept":
        return f"user answered: {result.data.answer}"
    return f"user chose {result.action}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def announce(uris: list[str], ctx: Context) -> str:
    """Sends `notifications/resources/updated` for each URI, in order, on the
    session's standalone stream (the GET stream), not on this call's answer."""
    for uri in uris:
        await ctx.session.send_resource_updated(uri)
    return f"announced {len(uris)}"


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

    def __init__(self, app, required: tuple[str, str] | None, record: bool = True):
        self.app = app
        self.required = required
        self.record = record

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
        if not self.record:
            return await self.app(scope, receive, send)
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
    parser.add_argument("--no-record", action="store_true", help="record no requests (benchmarks)")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (several processes, one port)")
    args = parser.parse_args()
    required = tuple(args.require_header.split("=", 1)) if args.require_header else None
    from mcp.server.transport_security import TransportSecuritySettings

    app = server.streamable_http_app(
        json_response=args.json,
        stateless_http=args.stateless,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    config = uvicorn.Config(
        Recorder(app, required, record=not args.no_record), host="127.0.0.1", port=args.port, log_level="warning"
    )
    sockets = None
    if args.reuse_port:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", args.port))
        sockets = [sock]
    print(f"READY {args.port}", flush=True)
    anyio.run(uvicorn.Server(config).serve, sockets)


if __name__ == "__main__":
    sys.exit(main())
