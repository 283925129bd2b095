"""`--mcp-stdio`: the MCP tools over stdin/stdout (one JSON-RPC message per line) for a local
assistant. initialize, ping and tools/list are answered here; tools/call is passed to the running
appliance's POST /mcp ([web] must be enabled), so both transports give the very same answers.
Nothing but protocol messages is written to stdout; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.error
import urllib.request
from typing import IO, Any

from app.config import Config
from app.web.mcp import McpServer, ToolError
from app.web.settings import is_loopback

log = logging.getLogger("app.web.mcp")
TIMEOUT_S = 30.0


def endpoint(cfg: Config) -> str:
    """The appliance's /mcp URL as seen from this machine."""
    host = cfg.web.host if is_loopback(cfg.web.host) else "127.0.0.1"
    if cfg.web.host in ("::", "[::]"):
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.web.port}/mcp"


class Forwarder:
    """tools/call -> the appliance's POST /mcp."""

    def __init__(self, cfg: Config) -> None:
        self.url = endpoint(cfg)
        self.token = cfg.web.token
        self.enabled = cfg.web.enabled
        self.ids = 0

    def _post(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.ids, "method": "tools/call",
                           "params": {"name": name, "arguments": args}}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                reply = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ToolError(f"the appliance answered HTTP {exc.code} at {self.url}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ToolError(f"the appliance's web API at {self.url} is not reachable ({exc}); is it running "
                            "with [web] enabled = yes?") from None
        if "error" in reply:
            raise ToolError(str(reply["error"].get("message", "error")))
        result: dict[str, Any] = reply["result"]
        return result

    async def __call__(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """One tool call, off the event loop."""
        if not self.enabled:
            raise ToolError("[web] enabled = no: the tools need the appliance's web process")
        return await asyncio.to_thread(self._post, name, args)


async def serve_lines(server: McpServer, stdin: IO[str], stdout: IO[str]) -> None:
    """Answer each line until end of input."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            reply: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        else:
            reply = await server.handle(msg)
        if reply is not None:
            stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
            stdout.flush()


def serve_stdio(cfg: Config) -> int:
    """Entry point of `--mcp-stdio`; exit code 0 at end of input."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    server = McpServer(call_tool=Forwarder(cfg))
    try:
        asyncio.run(serve_lines(server, sys.stdin, sys.stdout))
    except KeyboardInterrupt:
        pass
    return 0
