"""An upstream MCP endpoint that misbehaves on purpose, for the gateway's
hardening tests: it answers raw JSON-RPC the way a careless or hostile
server might, which no SDK server can be made to do. Each behaviour is a
path of its own, so one process serves every test:

    python raw_upstream.py PORT

- `/mcp/js/{json|sse}`: reads every request as JavaScript's `JSON.parse`
  does (an integer beyond 2^53 becomes the nearest double) and echoes the
  id so read; lists every tool, whatever the caller may see.
- `/mcp/wrong-id/{json|sse}`: answers every request under an id it never got.
- `/mcp/array`: answers with a JSON array holding the answer.
- `/mcp/big`: answers `tools/list` with more than 4 MiB of tools.
- `/mcp/large`: answers `tools/list` with just under 4 MiB of small tools
  (the benchmark of what filtering a large list costs).
- `/mcp/hang`: starts a JSON answer and never finishes it.
- `/mcp/paged`: lists its tools one per page, with cursors.
- `/mcp/params`: a tool whose `region` argument is marked `x-mcp-header`.
- `/mcp/tasks`: runs `tools/call` with `task` as a task (2025-11-25 tasks).

`GET /record` answers every request received (method, params, id, headers).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

RECORD: list[dict[str, Any]] = []

TOOLS = [
    {"name": "search", "description": "read-only", "annotations": {"readOnlyHint": True}, "inputSchema": {"type": "object"}},
    {"name": "create_issue", "description": "writes", "inputSchema": {"type": "object"}},
    {"name": "delete_repo", "description": "writes", "annotations": {"readOnlyHint": False}, "inputSchema": {"type": "object"}},
]

# About 4.0 MB (just under 4 MiB): 41 000 small tools, every other one read-only.
LARGE_LIST = [
    {"name": f"tool_{n:05}", "annotations": {"readOnlyHint": n % 2 == 0}, "inputSchema": {"type": "object"}}
    for n in range(41_000)
]

REGION_TOOL = {
    "name": "query",
    "description": "read-only, routed by region",
    "annotations": {"readOnlyHint": True},
    "inputSchema": {
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "sql": {"type": "string"}},
    },
}


def js_int(text: str) -> int | float:
    """An integer as JavaScript reads it: exact up to 2^53, the nearest
    double beyond (written back without a fraction, as `JSON.stringify` does)."""
    value = int(text)
    return value if abs(value) <= 2**53 else int(float(value))


def answer(id_: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def initialize_result() -> dict[str, Any]:
    return {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "raw-upstream", "version": "0"},
    }


def respond(message: dict[str, Any], sse: bool) -> Response:
    if sse:
        body = f"event: message\ndata: {json.dumps(message)}\n\n"
        return Response(body, media_type="text/event-stream")
    return JSONResponse(message)


def result_for(behaviour: str, request: dict[str, Any]) -> dict[str, Any] | None:
    method = request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        return initialize_result()
    if method == "server/discover":
        return {"resultType": "complete", "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}}
    if method == "tools/list":
        if behaviour == "paged":
            page = int(params.get("cursor") or 0)
            result: dict[str, Any] = {"tools": [TOOLS[page]]}
            if page + 1 < len(TOOLS):
                result["nextCursor"] = str(page + 1)
            return result
        if behaviour == "params":
            return {"tools": [REGION_TOOL]}
        if behaviour == "large":
            return {"tools": LARGE_LIST}
        if behaviour == "big":
            filler = "x" * 1000
            return {"tools": [{"name": f"tool_{n}", "description": filler, "inputSchema": {"type": "object"}} for n in range(5000)]}
        return {"tools": TOOLS}
    if method == "tools/call":
        if behaviour == "tasks" and "task" in params:
            number = len([e for e in RECORD if e.get("method") == "tools/call"])
            return {"task": {"taskId": f"task-{number}", "status": "working", "createdAt": "2026-12-07T00:00:00Z", "ttl": 60000}}
        return {"content": [{"type": "text", "text": f"called {params.get('name')}"}]}
    if method in ("tasks/get", "tasks/cancel"):
        return {"taskId": params.get("taskId"), "status": "completed", "createdAt": "2026-12-07T00:00:00Z", "ttl": 60000}
    if method == "tasks/result":
        return {
            "content": [{"type": "text", "text": "done"}],
            "_meta": {"io.modelcontextprotocol/related-task": {"taskId": params.get("taskId")}},
        }
    return {}


async def mcp(request: Request) -> Response:
    behaviour = request.path_params["behaviour"]
    mode = request.path_params.get("mode", "json")
    raw = await request.body()
    message = json.loads(raw, parse_int=js_int if behaviour == "js" else int)
    RECORD.append(
        {
            "behaviour": behaviour,
            "method": message.get("method"),
            "params": message.get("params"),
            "id": message.get("id"),
            "raw": raw.decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
    )
    if "id" not in message or "method" not in message:
        return Response(status_code=202)
    result = result_for(behaviour, message)
    id_ = "someone-else" if behaviour == "wrong-id" else message["id"]
    reply = answer(id_, result or {})
    if behaviour == "array":
        return JSONResponse([reply])
    if behaviour == "hang":

        async def never_ends():
            yield b'{"jsonrpc":"2.0","id":'
            await asyncio.sleep(3600)

        return StreamingResponse(never_ends(), media_type="application/json")
    return respond(reply, sse=mode == "sse")


async def record(request: Request) -> Response:
    if request.method == "DELETE":
        RECORD.clear()
        return Response(status_code=204)
    return JSONResponse(RECORD)


app = Starlette(
    routes=[
        Route("/mcp/{behaviour}", mcp, methods=["POST"]),
        Route("/mcp/{behaviour}/{mode}", mcp, methods=["POST"]),
        Route("/record", record, methods=["GET", "DELETE"]),
    ]
)

if __name__ == "__main__":
    port = int(sys.argv[1])
    print("READY", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
