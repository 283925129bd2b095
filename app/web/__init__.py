"""The web process: REST API, live stream, MCP endpoint and the static dashboard."""
