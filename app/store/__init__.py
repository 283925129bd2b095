"""The history store: SQLite quarter-hours per meter, its writer (a sink) and the one query layer
that serves --report, the REST API and MCP."""
