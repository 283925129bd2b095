"""The OpenAPI 3.1 document of the REST API, written by hand (no schema library at run time)."""

from __future__ import annotations

from typing import Any

from app import __version__

_DATE = {"type": "string", "description": "a local date (2024-05-01) or an ISO 8601 time with offset (its date); "
         "`to` is exclusive"}
_ERROR = {"type": "object", "required": ["success", "error"], "properties": {
    "success": {"const": False}, "error": {"type": "string"}}}
_NUM = {"type": ["number", "null"]}
_TIME = {"type": ["string", "null"], "description": "ISO 8601 with offset"}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
_COUNTERS = {
    "type": "object", "description": "Reader and post-processor counters since start; null (unknown) until their "
                                     "first status arrives (a second or two after start), never a made-up 0.",
    "required": ["telegrams_ok", "rejected", "crc_errors", "parse_errors", "decrypt_errors", "dropped",
                 "readings", "gaps", "sink_dropped", "web_dropped", "live_clients_dropped"],
    "properties": {**{k: _COUNT for k in ("telegrams_ok", "rejected", "crc_errors", "parse_errors",
                                          "decrypt_errors", "dropped", "readings", "gaps", "sink_dropped",
                                          "web_dropped")},
                   "live_clients_dropped": {"type": "integer", "minimum": 0}}}
_METER = {"type": "object", "required": ["id", "name", "location", "protocol", "meterType", "status", "currentPower",
                                          "totalEnergy", "voltage", "current", "powerFactor", "frequency",
                                          "lastUpdate"],
          "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "location": {"type": ["string", "null"]},
                         "protocol": {"type": ["string", "null"]}, "meterType": {"type": "string"},
                         "status": {"enum": ["online", "offline", "error"]},
                         "statusReason": {"type": ["string", "null"], "description": "why offline or error"},
                         "currentPower": {**_NUM, "description": "kW, import - export"},
                         "totalEnergy": {**_NUM, "description": "kWh imported"}, "voltage": _NUM, "current": _NUM,
                         "powerFactor": _NUM, "frequency": _NUM, "lastUpdate": _TIME}}
_RELAY = {"type": "object", "required": ["name", "state", "mode", "reason", "since", "next_switch_allowed",
                                          "blocked_by"],
          "properties": {"name": {"type": "string"}, "state": {"enum": ["on", "off"]},
                         "mode": {"enum": ["auto", "on", "off"]}, "safe_state": {"enum": ["on", "off"]},
                         "reason": {"type": ["string", "null"]}, "pending": {"type": ["string", "null"]},
                         "since": _TIME, "next_switch_allowed": _TIME,
                         "blocked_by": {"type": "array", "items": {"enum": [
                             "manual", "min_on", "min_off", "settle", "max_switches", "hours"]}},
                         "device": {"type": ["object", "null"], "description": "network relays: the device as "
                                    "read back (null for GPIO)", "properties": {
                             "type": {"enum": ["shelly", "tasmota", "tapo"]},
                             "state": {"enum": ["on", "off", "unknown"]}, "commanded": {"enum": ["on", "off"]},
                             "reachable": {"type": ["boolean", "null"]}, "mismatches": {"type": "integer"},
                             "last_mismatch": _TIME, "failures": {"type": "integer"},
                             "dropped": {"type": "integer"}, "error": {"type": "string"}}}}}
_CURRENT = {"type": "object", "required": ["seq", "timestamp", "meter_id", "fields", "power_w", "relays"],
            "properties": {"seq": {"type": "integer"}, "timestamp": {"type": "string"},
                           "received": {"type": "string"}, "meter_id": {"type": "string"},
                           "protocol": {"type": "string"},
                           "fields": {"type": "object", "additionalProperties": {"type": "number"},
                                      "description": "the named fields as --decode prints them (kW, kWh, V, A)"},
                           "power_w": {**_NUM, "description": "import - export in W"},
                           "relays": {"type": "object", "additionalProperties": {"enum": ["on", "off"]}}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad parameter", 401: "missing or wrong bearer token", 403: "cross-origin request",
            404: "not found", 409: "conflict: the P1 or a main-INI meter, an id taken, a relay needs it",
            500: "the meter file could not be written",
            503: "no reading yet, or the history store is not available"}
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _get(summary: str, schema: dict[str, Any], *codes: int, params: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _json(schema), **_errors(401, *codes)}}
    if params:
        op["parameters"] = params
    return {"get": op}


_METER_BODY = {"type": "object", "required": ["name", "protocol"],
               "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "location": {"type": "string"},
                              "protocol": {"enum": ["modbus", "mqtt", "http", "iec62056-21", "tapo"]},
                              "meterType": {"enum": ["grid", "building", "solar", "zone"]},
                              "pollInterval": {"type": "number", "description": "ms"},
                              "offlineAfter": {"type": "number", "description": "ms"},
                              "communication": {"type": "object", "description": "the protocol's keys in "
                                                "camelCase (ipAddress, port, unitId, registers{...}, topics{...}, "
                                                "url, headers{...}, authToken, ...)"}}}


def _write(summary: str, ok: int) -> dict[str, Any]:
    return {"summary": summary, "requestBody": {"required": True, "content": {"application/json": {
        "schema": _METER_BODY}}}, "responses": {str(ok): _json(_wrapped({"type": "object"})),
                                                **_errors(400, 401, 403, 404, 409, 500)}}


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _wrapped(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["success", "data"],
            "properties": {"success": {"const": True}, "data": schema}}


def openapi_document(token: bool) -> dict[str, Any]:
    """The document; with a token every /api operation needs the bearer scheme."""
    rows = {"type": "array", "items": {"type": "object"}, "description": "the row objects of --report --json"}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "smartmeter", "version": __version__,
                 "description": "Local API of the smart-meter appliance. Powers in W (currentPower in kW), "
                                "energy in kWh, times ISO 8601 with offset."},
        "paths": {
            "/api/energy/smart-meter/status": _get("Meter status and counters", {
                "type": "object", "required": ["online", "last_reading", "counters", "uptime_s", "version"],
                "properties": {"meter_id": {"type": ["string", "null"]}, "protocol": {"type": ["string", "null"]},
                               "header": {"type": ["string", "null"]}, "online": {"type": "boolean"},
                               "last_reading": _TIME, "counters": _COUNTERS,
                               "lag_s": {"type": ["object", "null"]}, "uptime_s": {"type": "number"},
                               "version": {"type": "string"}}}),
            "/api/energy/smart-meter/current": _get("The latest reading", _CURRENT, 503),
            "/api/energy/smart-meter/history": _get(
                "History rows", {"type": "object", "required": ["resolution", "rows"],
                                 "properties": {"resolution": {"type": "string"}, "rows": rows}}, 400, 503,
                params=[_q("resolution", {"enum": ["quarter", "hour", "day", "month", "year"]}, "default day"),
                        _q("from", _DATE), _q("to", _DATE)]),
            "/api/energy/smart-meter/cost": _get(
                "Cost with parts, per period, projection and tariff comparison",
                {"type": "object", "properties": {"currency": {"type": "string"}, "total": {},
                                                  "periods": {}, "projection": {}, "compare": {}}},
                400, 503, params=[_q("from", _DATE, "default: the first of this month"), _q("to", _DATE),
                                  _q("tariff", {"type": "string"}, "a [tariff:NAME] section")]),
            "/api/energy/smart-meter/capacity": _get("This month's capacity peak, 12-month mean, floor",
                                                     {"type": "object"}, 503),
            "/api/energy-meters": {"post": _write("Add a meter: saved as meters_dir/NAME.ini, started by main", 201),
                                   **_get("The meter registry", {
                "type": "object", "required": ["success", "data", "count"],
                "properties": {"success": {"const": True}, "data": {"type": "array", "items": _METER},
                               "count": {"type": "integer"}}})},
            "/api/energy-meters/consumption/building": _get("The whole building", _wrapped({
                "type": "object", "required": ["currentPower", "totalEnergy", "meterCount", "timestamp"],
                "properties": {"currentPower": _NUM, "totalEnergy": _NUM, "meterCount": {"type": "integer"},
                               "timestamp": _TIME}}), 503),
            "/api/energy-meters/{id}": {**_get("One meter", _wrapped(_METER), 404), "parameters": [_p("id")],
                                        "put": _write("Replace a meter of meters_dir (only it restarts)", 200),
                                        "delete": {"summary": "Remove a meter of meters_dir (main stops it)",
                                                   "responses": {"200": _json(_wrapped({"type": "object"})),
                                                                 **_errors(401, 403, 404, 409)}}},
            "/api/energy-meters/{id}/reading": {**_get("One meter's latest reading", _wrapped({"type": "object"}),
                                                       404, 503), "parameters": [_p("id")]},
            "/api/relays": _get("Every relay: state, mode, reason, since, next allowed switch", {
                "type": "object", "required": ["relays"],
                "properties": {"relays": {"type": "array", "items": _RELAY}}}),
            "/api/relays/{name}": {"parameters": [_p("name")], "post": {
                "summary": "Set a relay's mode (the MQTT `set` override path)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["mode"],
                    "properties": {"mode": {"enum": ["on", "off", "auto"]}}}}}},
                "responses": {"202": _json({
                    "type": "object", "required": ["success", "relay", "mode", "outcome", "state"],
                    "properties": {"success": {"const": True}, "relay": {"type": "string"},
                                   "mode": {"enum": ["on", "off", "auto"]},
                                   "outcome": {"enum": ["applied", "deferred", "unchanged", "superseded",
                                                        "ignored", "pending"]},
                                   "detail": {"type": "string"}, "until": _TIME,
                                   "state": {"anyOf": [_RELAY, {"type": "null"}]}}}, "accepted"),
                              **_errors(400, 401, 403, 404, 503)}}},
            "/api/live": _get("Server-Sent Events: one `current` object per reading (id = seq), a heartbeat event",
                              {"type": "string"}, 503),
        },
    }
    doc["paths"]["/api/live"]["get"]["responses"]["200"] = {
        "description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    if token:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        doc["security"] = [{"bearer": []}]
    else:
        for item in doc["paths"].values():
            for op in item.values():
                if isinstance(op, dict) and "responses" in op:
                    op["responses"].pop("401", None)
    return doc
