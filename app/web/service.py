"""What the REST API and the MCP tools answer: one place, so both give the same numbers.

Live answers come from `LiveState`; history, cost and capacity from the store's one query layer
(`app.store.query.HistoryQuery`, the one `--report` uses), run on a single worker thread that
owns its read-only SQLite connection. Every failure is an `ApiError` with its HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from app import logutil
from app.config import Config
from app.web.state import LiveState

log = logging.getLogger("app.web")
RESOLUTIONS = ("quarter", "hour", "day", "month", "year")
PERIODS = ("day", "month", "year")
CACHE_S = 60.0  # an answer is reused at most this long (projections and "today" move on)
CACHE_ENTRIES = 32
MAX_SPAN_DAYS = {"quarter": 93, "hour": 400, "day": 3660, "month": 36600, "year": 36600}


class ApiError(Exception):
    """A request that cannot be answered: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_when(text: str | None, name: str, tz: tzinfo) -> date | None:
    """`2024-05-01`, or an ISO 8601 time with offset (its local date in `tz`); None when absent; 400 otherwise."""
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{name}={text!r}: expected a date (2024-05-01) or an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ApiError(400, f"{name}={text!r}: a time needs its UTC offset (e.g. +02:00)")
    return t.astimezone(tz).date()


def default_range(resolution: str, start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """[from, to) in local dates, `to` exclusive as in `--report`. Missing bounds: up to and including
    today, from today (quarter, hour), 31 days, 12 months or 10 years back; checked."""
    if end is None:
        end = today + timedelta(days=1)
    if start is None:
        back = {"quarter": 1, "hour": 1, "day": 31, "month": 366, "year": 3653}[resolution]
        start = end - timedelta(days=back)
        if resolution == "month":
            start = start.replace(day=1)
        elif resolution == "year":
            start = start.replace(month=1, day=1)
    if end <= start:
        raise ApiError(400, f"to={end.isoformat()} must be after from={start.isoformat()} (to is exclusive)")
    if (end - start).days > MAX_SPAN_DAYS[resolution]:
        raise ApiError(400, f"{resolution} rows over more than {MAX_SPAN_DAYS[resolution]} days: "
                       "choose a coarser resolution or a shorter range")
    return start, end


class History:
    """The query layer on one worker thread (SQLite connections stay on their thread)."""

    def __init__(self, cfg: Config, factory: Callable[[Config], Any] | None = None) -> None:
        """`factory` builds the query object (default: `app.store.query.HistoryQuery`)."""
        self.cfg = cfg
        self.factory = factory
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._query: Any = None
        self.limited = logutil.RateLimited(log, cfg.general.log_interval)
        # answers kept while the store's files are unchanged (the recorder commits about once a minute):
        # ten clients asking for the same year of days cost one query
        self._cache: OrderedDict[tuple[Any, ...], tuple[tuple[int, ...], float, Any]] = OrderedDict()

    def _stamp(self) -> tuple[int, ...]:
        """What changes when the store is written: size and mtime of the file and its WAL."""
        out: list[int] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(self.cfg.history.path + suffix)
                out += [st.st_mtime_ns, st.st_size]
            except OSError:
                out += [0, 0]
        return tuple(out)

    def _open(self) -> Any:
        if self._query is None:
            if not self.cfg.history.enabled:
                raise ApiError(503, "the history store is off ([history] enabled = no)")
            if self.factory is None:
                from app.store.query import HistoryQuery

                self.factory = HistoryQuery
            self._query = self.factory(self.cfg)
        return self._query

    def _run(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = (method, args, tuple(sorted(kwargs.items())))
        stamp = self._stamp()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp and now - hit[1] < CACHE_S:
            self._cache.move_to_end(key)
            return hit[2]
        result = self._query_once(method, args, kwargs)
        self._cache[key] = (stamp, now, result)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return result

    def _query_once(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self._open(), method)(*args, **kwargs)
        except ApiError:
            raise
        except ValueError as exc:
            raise ApiError(400, str(exc) or "bad request") from None
        except Exception as exc:  # the store missing, locked or broken: the API answers 503, never 500
            self.limited.log(logging.ERROR, method, "history %s failed", method, exc_info=True)
            self._close_query()
            raise ApiError(503, f"history store not available: {type(exc).__name__}: {exc}") from None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one query method on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._run, method, args, kwargs)

    def _close_query(self) -> None:
        q, self._query = self._query, None
        if q is not None:
            try:
                q.close()
            except Exception:  # closing a broken connection: nothing more to lose
                log.debug("closing the history query failed", exc_info=True)

    def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        try:
            self.pool.submit(self._close_query).result(timeout=2.0)
        except Exception:  # a query still running at shutdown
            log.debug("history close did not finish", exc_info=True)
        self.pool.shutdown(wait=False, cancel_futures=True)


class Service:
    """The answers, as plain JSON-able data."""

    def __init__(self, cfg: Config, state: LiveState, history: History) -> None:
        self.cfg = cfg
        self.state = state
        self.history = history
        self.tz = ZoneInfo(cfg.meter.timezone)

    def status(self) -> dict[str, Any]:
        """Meter status and counters."""
        return self.state.status_json()

    def current(self) -> dict[str, Any]:
        """The latest reading; 503 until one arrived."""
        if self.state.current is None:
            raise ApiError(503, "no reading has arrived yet")
        return self.state.current

    def power(self) -> dict[str, Any]:
        """Power now, in total and per phase (W, V, A)."""
        cur = self.current()
        f = cur["fields"]

        def w(name: str) -> float | None:
            v = f.get(name)
            return None if v is None else round(float(v) * 1000.0, 3)

        phases = {}
        for n in (1, 2, 3):
            phase = {"import_w": w(f"actual_l{n}_consumption"), "export_w": w(f"actual_l{n}_injection"),
                     "voltage_v": f.get(f"l{n}_voltage"), "current_a": f.get(f"l{n}_current")}
            if any(v is not None for v in phase.values()):
                phases[f"L{n}"] = phase
        return {"timestamp": cur["timestamp"], "meter_id": cur["meter_id"], "power_w": cur["power_w"],
                "import_w": w("actual_total_consumption"), "export_w": w("actual_total_injection"),
                "phases": phases, "online": self.state.online()}

    def _today(self) -> date:
        return datetime.now(self.tz).date()

    async def history_rows(self, resolution: str | None, start: str | None, end: str | None) -> dict[str, Any]:
        """`{"resolution", "rows"}`: the `--report --json` rows."""
        res = (resolution or "day").lower()
        if res not in RESOLUTIONS:
            raise ApiError(400, f"resolution={resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
        a, b = default_range(res, parse_when(start, "from", self.tz), parse_when(end, "to", self.tz), self._today())
        rows = await self.history.call("rows", res, a, b)
        return {"resolution": res, "from": a.isoformat(), "to": b.isoformat(), "rows": rows}

    async def cost(self, start: str | None, end: str | None, tariff: str | None) -> dict[str, Any]:
        """Cost with its parts, per period, projection and comparison."""
        today = self._today()
        a, b = default_range("day", parse_when(start, "from", self.tz) or today.replace(day=1),
                             parse_when(end, "to", self.tz), today)
        result: dict[str, Any] = await self.history.call("cost", a, b, tariff=tariff or None)
        return result

    async def capacity(self) -> dict[str, Any]:
        """This month's capacity peak against the 12-month mean and the floor."""
        result: dict[str, Any] = await self.history.call("capacity")
        return result

    def relays(self) -> list[dict[str, Any]]:
        """Every relay's state, mode, reason and timers."""
        return self.state.relays

    # ------------------------------------------------------------ the WAGO meter registry

    def meters(self) -> list[dict[str, Any]]:
        """The meter registry: the [meter] meter, then every [meter:NAME] one with its own status."""
        return [self._meter(), *(self._other(m) for m in self.state.meter_specs)]

    def meter(self, meter_id: str) -> dict[str, Any]:
        """One meter by id (its name, or the [meter] meter's own serial); 404 otherwise."""
        meters = self.meters()
        r = self.state.reading
        for m in meters:
            if meter_id == m["id"]:
                return m
        if r is not None and meter_id == r.meter_id:
            return meters[0]
        raise ApiError(404, f"no meter {meter_id!r} (known: {', '.join(m['id'] for m in meters)})")

    def meter_reading(self, meter_id: str) -> dict[str, Any]:
        """The latest reading of one meter, WAGO style."""
        m = self.meter(meter_id)
        if m["id"] in self.state.meters:
            reading = self.state.meters[m["id"]]["reading"]
            if reading is None:
                raise ApiError(503, f"no reading from meter {m['id']!r} yet ({m['statusReason']})")
            return {"meterId": m["id"], "timestamp": m["lastUpdate"], "currentPower": m["currentPower"],
                    "totalEnergy": m["totalEnergy"], "totalExport": _total_export(reading.fields),
                    "voltage": m["voltage"], "current": m["current"], "powerFactor": m["powerFactor"],
                    "frequency": m["frequency"]}
        cur = self.current()
        return {"meterId": m["id"], "timestamp": cur["timestamp"], "currentPower": m["currentPower"],
                "totalEnergy": m["totalEnergy"], "totalExport": _total_export(cur["fields"]),
                "voltage": m["voltage"], "current": m["current"], "powerFactor": None, "frequency": None}

    def building(self) -> dict[str, Any]:
        """The whole building: the net import of the grid and building meters that are online."""
        self.current()
        counted = [m for m in self.meters() if m["meterType"] in ("grid", "building") and m["status"] != "offline"
                   and m["currentPower"] is not None]
        energy = [m["totalEnergy"] for m in counted if m["totalEnergy"] is not None]
        stamps = [m["lastUpdate"] for m in counted if m["lastUpdate"] is not None]
        return {"currentPower": round(sum(m["currentPower"] for m in counted), 6) if counted else None,
                "totalEnergy": round(sum(energy), 3) if energy else None,
                "meterCount": len(counted), "timestamp": max(stamps) if stamps else None}

    def _meter(self) -> dict[str, Any]:
        cur, s = self.state.current, self.state.status
        status, reason = ("online", None) if self.state.online() else (
            "offline", f"no reading within stale_after ({self.cfg.control.stale_after:g} s)")
        if s is not None and not s.connected:
            status, reason = "error", "not connected to the meter's port"
        f: dict[str, float] = cur["fields"] if cur is not None else {}
        volts = [f[k] for k in ("l1_voltage", "l2_voltage", "l3_voltage") if k in f]
        amps = [f[k] for k in ("l1_current", "l2_current", "l3_current") if k in f]
        return {
            "id": self.cfg.meter.name,
            "name": f"Grid meter {cur['meter_id']}" if cur is not None and cur["meter_id"] else "Grid meter",
            "location": None,
            "protocol": cur["protocol"] if cur is not None else (self.cfg.meter.protocol
                                                                  if self.cfg.meter.protocol != "auto" else None),
            "meterType": self.cfg.meter.role,
            "status": status,
            "statusReason": reason,
            "currentPower": None if cur is None or cur["power_w"] is None else round(cur["power_w"] / 1000.0, 6),
            "totalEnergy": _total_import(f),
            "voltage": round(sum(volts) / len(volts), 1) if volts else None,
            "current": round(sum(amps), 3) if amps else None,
            "powerFactor": None,
            "frequency": None,
            "lastUpdate": cur["timestamp"] if cur is not None else None,
        }

    def _other(self, spec: Any) -> dict[str, Any]:
        """A [meter:NAME] meter as the registry shows it (its latest reading and status off the live channel)."""
        live = self.state.meters.get(spec.name, {"reading": None, "status": "offline", "reason": "no reading yet"})
        r = live["reading"]
        f: dict[str, float] = r.fields if r is not None else {}
        v = r.values if r is not None else {}
        power = None
        if "actual_total_consumption" in f or "actual_total_injection" in f:
            power = round(f.get("actual_total_consumption", 0.0) - f.get("actual_total_injection", 0.0), 6)
        pf, hz = v.get("1-0:13.7.0"), v.get("1-0:14.7.0")
        return {
            "id": spec.name,
            "name": spec.name,
            "location": spec.location or None,
            "protocol": spec.protocol,
            "meterType": spec.role,
            "status": live["status"],
            "statusReason": live["reason"] or None,
            "currentPower": power,
            "totalEnergy": _total_import(f),
            "voltage": f.get("l1_voltage"),
            "current": f.get("l1_current"),
            "powerFactor": pf.value if pf is not None and isinstance(pf.value, int | float) else None,
            "frequency": hz.value if hz is not None and isinstance(hz.value, int | float) else None,
            "lastUpdate": r.time.isoformat() if r is not None else None,
        }


def _total_import(f: dict[str, float]) -> float | None:
    if "total_consumption" in f:
        return f["total_consumption"]
    parts = [f[k] for k in ("total_consumption_day", "total_consumption_night") if k in f]
    return round(sum(parts), 3) if parts else None


def _total_export(f: dict[str, float]) -> float | None:
    if "total_injection" in f:
        return f["total_injection"]
    parts = [f[k] for k in ("total_injection_day", "total_injection_night") if k in f]
    return round(sum(parts), 3) if parts else None
