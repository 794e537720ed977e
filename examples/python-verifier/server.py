"""A small MCP server (official Python SDK) that admits Cola keys by asking
Cola, not by holding them: register it in Cola with `"url": null`, mint its
verification token, grant keys on its slug, and run

    COLA_URL=https://cola.example.com COLA_SERVER_TOKEN=colasrv_… python server.py

Clients connect to http://127.0.0.1:8000/mcp (PORT, HOST to change it) with
`Authorization: Bearer cola_…`; a key Cola does not answer VALID gets 401.
"""

from __future__ import annotations

import json
import os

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from cola_verifier import ClientAddress, ColaTokenVerifier, may_use_tool

COLA_URL = os.environ["COLA_URL"].rstrip("/")

server = MCPServer(
    "notes",
    instructions="A notebook protected by Cola keys.",
    token_verifier=ColaTokenVerifier(COLA_URL, os.environ["COLA_SERVER_TOKEN"]),
    # Cola is the authority; no OAuth metadata is advertised (a static key
    # cannot finish an OAuth login), and the key's grant for this server is
    # what Cola checks for it, so no audience check is left to the SDK.
    auth=AuthSettings(issuer_url=COLA_URL, resource_server_url=None),
)

NOTES: list[str] = []


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def list_notes() -> str:
    """Lists the notes (read-only)."""
    if not may_use_tool("list_notes", read_only=True):
        raise ToolError("this key may not use list_notes")
    return "\n".join(NOTES) or "(no notes)"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False))
def add_note(text: str) -> str:
    """Adds a note (writes: needs a key with write permission)."""
    if not may_use_tool("add_note", read_only=False):
        raise ToolError("this key may not use add_note")
    NOTES.append(text)
    return f"noted: {text}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def whoami() -> str:
    """Who Cola says is calling: tenant, user, key and permissions."""
    access = get_access_token()
    assert access is not None  # the SDK admits no request without one
    return json.dumps(access.claims)


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    app = ClientAddress(server.streamable_http_app(host=host))
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
