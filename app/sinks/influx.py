"""InfluxDB export: readings -> Points -> batches -> v2 write API or v1 /write, spooled on failure.

Point layout (one measurement, `[influxdb] measurement`, default `smartmeter`):

    smartmeter,meter_id=<id> <named fields as floats>,relay_<name>=0i|1i <meter time, epoch s>
    smartmeter,meter_id=<id> total_gas_consumption=<m3> <gas_time, epoch s>     (once per new gas reading)
    smartmeter,meter_id=<NAME>,meter=<NAME> ...                                 (a [meter:NAME] meter's points)

Relay states are integers 0/1 (not booleans): InfluxQL and Flux can average and sum them (mean = duty
cycle) and VictoriaMetrics stores them as they are. Named fields are always floats, so a whole number
never turns a field into an integer (which InfluxDB would refuse as a type conflict).

The converters at the top are pure; `InfluxSink` batches line protocol in memory and hands full
batches to a `SpooledSender` (app.sinks.spool), which sends them or spools them durably.

Both APIs are plain HTTP POSTs of line protocol, written with the standard library: influxdb-client
(with urllib3, reactivex and dateutil: ~550 modules, +16 MB in the post-processor) is not imported.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from app.config import InfluxConfig
from app.errors import ConfigError
from app.obis import GAS_FIELD
from app.records import Reading
from app.sinks import Sink
from app.sinks.spool import Backoff, Batch, Outcome, SendResult, Spool, SpooledSender, SpoolLockedError

log = logging.getLogger(__name__)

RELAY_PREFIX = "relay_"
REJECT_STATUSES = frozenset({400, 413, 422})  # the server says the data itself is bad
CLOSE_TIMEOUT_S = 1.0  # per attempt at shutdown; after one failure the rest goes to the spool
PENDING_BATCHES_MAX = 10  # in-memory cap (x batch_size) if tick() stops coming; the excess is spooled
MESSAGE_MAX = 500
GZIP_LEVEL = 5


# ---------------------------------------------------------------- line protocol

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


class Point:
    """One line of line protocol, formatted as influxdb-client's Point formats it (tags and fields
    sorted by key, None and non-finite values left out, a whole float without its `.0`, integers `i`)."""

    __slots__ = ("_fields", "_measurement", "_tags", "_time")

    def __init__(self, measurement: str) -> None:
        self._measurement = measurement
        self._tags: dict[str, str | None] = {}
        self._fields: dict[str, float | int | bool | str | None] = {}
        self._time: int | None = None

    def tag(self, key: str, value: str | None) -> Point:
        """Add a tag (None or empty: left out)."""
        self._tags[key] = value
        return self

    def field(self, key: str, value: float | int | bool | str | None) -> Point:
        """Add a field (None: left out)."""
        self._fields[key] = value
        return self

    def time(self, epoch_s: int) -> Point:
        """The point's time in whole seconds (the writers send precision=s)."""
        self._time = epoch_s
        return self

    def to_line_protocol(self) -> str:
        """`measurement,tag=v field=v time`, or "" when no field is left."""
        fields = []
        for key, value in sorted(self._fields.items()):
            k = key.translate(_ESCAPE_KEY)
            if value is None:
                continue
            if isinstance(value, bool):
                fields.append(f"{k}={str(value).lower()}")
            elif isinstance(value, int):
                fields.append(f"{k}={value}i")
            elif isinstance(value, float):
                if not math.isfinite(value):
                    continue
                text = str(value)
                fields.append(f"{k}={text[:-2] if text.endswith('.0') else text}")
            else:
                fields.append(f'{k}="{str(value).translate(_ESCAPE_STRING)}"')
        if not fields:
            return ""
        tags = []
        for key, tag in sorted(self._tags.items()):
            if tag is None:
                continue
            k, v = key.translate(_ESCAPE_KEY), tag.translate(_ESCAPE_KEY)
            if v.endswith("\\"):
                v += " "
            if k and v:
                tags.append(f",{k}={v}")
        when = "" if self._time is None else f" {self._time}"
        return f"{self._measurement.translate(_ESCAPE_MEASUREMENT)}{''.join(tags)} {','.join(fields)}{when}"


# ---------------------------------------------------------------- pure converters


def epoch_s(dt: datetime) -> int:
    """Whole seconds since the epoch; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() // 1)


def relay_fields(relays: Mapping[str, bool]) -> dict[str, int]:
    """relay_<name> -> 0/1."""
    return {f"{RELAY_PREFIX}{name}": int(bool(on)) for name, on in relays.items()}


def reading_point(reading: Reading, relays: Mapping[str, bool], measurement: str) -> Point | None:
    """The electricity point of a reading (gas excluded), or None when it has no field at all."""
    p = Point(measurement).tag("meter_id", reading.meter_id or None).tag("meter", reading.meter or None)
    n = 0
    for name, value in reading.fields.items():
        if name != GAS_FIELD.name:
            p.field(name, float(value))
            n += 1
    for name, state in relay_fields(relays).items():
        p.field(name, state)
        n += 1
    if n == 0:
        return None
    return p.time(epoch_s(reading.time))


def gas_point(reading: Reading, measurement: str) -> Point | None:
    """The gas point at the gas reading's own time (the reading time if the meter sends none), or None."""
    value = reading.fields.get(GAS_FIELD.name)
    if value is None:
        return None
    at = reading.gas_time if reading.gas_time is not None else reading.time
    return (
        Point(measurement)
        .tag("meter_id", reading.meter_id or None)
        .field(GAS_FIELD.name, float(value))
        .time(epoch_s(at))
    )


def relay_point(states: Mapping[str, bool], at: datetime, measurement: str, meter_id: str) -> Point | None:
    """Relay states changed outside a reading, as a point at `at` (None without relays)."""
    if not states:
        return None
    p = Point(measurement).tag("meter_id", meter_id or None)
    for name, state in relay_fields(states).items():
        p.field(name, state)
    return p.time(epoch_s(at))


class GasTracker:
    """Decides whether a reading carries a new gas reading (written once, not once per telegram)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int | None, float]] = {}

    def is_new(self, reading: Reading) -> bool:
        """True the first time a (meter, gas_time) pair is seen; without gas_time, when the value changes."""
        value = reading.fields.get(GAS_FIELD.name)
        if value is None:
            return False
        at = epoch_s(reading.gas_time) if reading.gas_time is not None else None
        last = self._last.get(reading.meter_id)
        if last is not None and (last[0] == at if at is not None else last[1] == value):
            return False
        self._last[reading.meter_id] = (at, value)
        return True


def reading_lines(
    reading: Reading, relays: Mapping[str, bool], measurement: str, gas: GasTracker
) -> Iterator[bytes]:
    """Line protocol for one reading: the electricity point, and the gas point when it is new."""
    p = reading_point(reading, relays, measurement)
    if p is not None:
        yield p.to_line_protocol().encode("utf-8")
    if gas.is_new(reading):
        g = gas_point(reading, measurement)
        if g is not None:
            yield g.to_line_protocol().encode("utf-8")


def classify(status: int) -> Outcome:
    """HTTP status -> outcome: 2xx ok; 400/413/422 bad data; everything else is worth retrying."""
    if 200 <= status < 300:
        return Outcome.OK
    if status in REJECT_STATUSES:
        return Outcome.REJECT
    return Outcome.RETRY


def server_message(body: bytes | str | None, fallback: str) -> str:
    """The error text of an InfluxDB answer: JSON `error` (1.x) or `message` (2.x), else the raw body."""
    if body is None:
        return fallback
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:MESSAGE_MAX]
    return text.strip()[:MESSAGE_MAX] or fallback


# ---------------------------------------------------------------- writers


class Writer(Protocol):
    """Sends one batch of line protocol; never raises for an outage."""

    def send(self, batch: Batch, timeout_s: float | None = None) -> SendResult:
        """POST the batch; timeout_s overrides the configured timeout."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _post(opener: urllib.request.OpenerDirector, url: str, payload: bytes, headers: dict[str, str],
          timeout_s: float) -> SendResult:
    """POST line protocol; the HTTP status becomes the outcome, an outage a retry (never raises)."""
    req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            return SendResult(classify(resp.status), f"HTTP {resp.status}", resp.status)
    except urllib.error.HTTPError as exc:
        msg = server_message(exc.read(), exc.reason if isinstance(exc.reason, str) else str(exc))
        return SendResult(classify(exc.code), msg, exc.code)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        return SendResult(Outcome.RETRY, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")


def _opener() -> urllib.request.OpenerDirector:
    # No environment proxies: the database is usually on the LAN.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class V1Writer:
    """InfluxDB 1.x: POST line protocol to /write?db=…&rp=…&precision=s with optional basic auth."""

    def __init__(self, cfg: InfluxConfig) -> None:
        query = {"db": cfg.database, "precision": "s"}
        if cfg.retention_policy:
            query["rp"] = cfg.retention_policy
        self.url = f"{cfg.url}/write?{urllib.parse.urlencode(query)}"
        self.timeout_s = cfg.timeout
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.username:
            cred = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {cred}"
        self._opener = _opener()

    def send(self, batch: Batch, timeout_s: float | None = None) -> SendResult:
        """POST the batch; 204 is success."""
        return _post(self._opener, self.url, batch.payload, self.headers, timeout_s or self.timeout_s)

    def close(self) -> None:
        """Nothing held open (one connection per batch)."""


class V2Writer:
    """InfluxDB 2.x/3.x (and 1.8+ compat, VictoriaMetrics): POST gzipped line protocol to
    /api/v2/write?org=…&bucket=…&precision=s with `Authorization: Token …` (the v2 write API)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        query = {"org": cfg.org, "bucket": cfg.bucket, "precision": "s"}
        self.url = f"{cfg.url.rstrip('/')}/api/v2/write?{urllib.parse.urlencode(query)}"
        self.timeout_s = cfg.timeout
        self.headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip",
                        "Accept": "application/json", "Authorization": f"Token {cfg.token}"}
        self._opener = _opener()

    def send(self, batch: Batch, timeout_s: float | None = None) -> SendResult:
        """POST the batch gzipped; 204 is success."""
        body = gzip.compress(batch.payload, GZIP_LEVEL, mtime=0)
        return _post(self._opener, self.url, body, self.headers, timeout_s or self.timeout_s)

    def close(self) -> None:
        """Nothing held open (one connection per batch)."""


def make_writer(cfg: InfluxConfig) -> Writer:
    """The writer for `[influxdb] api`."""
    return V1Writer(cfg) if cfg.api == "v1" else V2Writer(cfg)


# ---------------------------------------------------------------- the sink


class InfluxSink(Sink):
    """Readings -> line protocol batches -> InfluxDB; spooled on disk while the server is away."""

    name = "influxdb"

    def __init__(
        self,
        cfg: InfluxConfig,
        writer: Writer | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        try:
            self.spool = Spool(cfg.spool_dir, cfg.spool_max)
        except OSError as exc:
            why = str(exc) if isinstance(exc, SpoolLockedError) else (exc.strerror or str(exc))
            raise ConfigError(
                f"[influxdb] spool_dir = {cfg.spool_dir!r}: not usable ({why})",
                "influxdb", "spool_dir",
            ) from exc
        self.writer = writer or make_writer(cfg)
        self.sender = SpooledSender(
            "influxdb", self.writer.send, self.spool, backoff or Backoff(1.0, 60.0), cfg.status_interval
        )
        self.clock = clock
        self._lines: list[bytes] = []
        self._pending_since: float | None = None  # tick time at which the oldest pending line was seen
        self._gas = GasTracker()
        self._meter_id = ""
        self._closed = False

    # ---------------------------------------------------------- hooks

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Convert and batch in memory; sending happens in tick()."""
        self._meter_id = reading.meter_id or self._meter_id
        self._lines.extend(reading_lines(reading, relays, self.cfg.measurement, self._gas))
        self._cap_pending()

    def relay_event(self, states: Mapping[str, bool], at: datetime, reason: str) -> None:
        """Relay states at `at` as their own point (same series as the readings)."""
        p = relay_point(states, at, self.cfg.measurement, self._meter_id)
        if p is not None:
            self._lines.append(p.to_line_protocol().encode("utf-8"))
            self._cap_pending()

    def tick(self, now: float) -> None:
        """Send full batches, or everything once flush_interval has passed; replay the spool."""
        if self._closed:
            return
        if self._lines and self._pending_since is None:
            self._pending_since = now
        due = self._pending_since is not None and now - self._pending_since >= self.cfg.flush_interval
        if len(self._lines) >= self.cfg.batch_size or (due and self._lines):
            self._flush(now, whole=due)
        self.sender.tick(now)

    def close(self) -> None:
        """Send what is pending (one short attempt) or spool it; never replays; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            now = self.clock()
            for batch in self._take_batches(whole=True):
                if self.sender.backoff.ready(now):
                    self.sender.submit(batch, now, timeout_s=min(self.cfg.timeout, CLOSE_TIMEOUT_S))
                else:
                    self.sender.spool_batch(batch)
            if self.sender.backlogged:
                s = self.sender.stats
                log.warning(
                    "influxdb: stopping with %d points in the spool %s (spooled %d, replayed %d, dropped %d)",
                    self.spool.pending_points, self.spool.dir, s.spooled, s.replayed, s.dropped,
                )
        finally:
            self.spool.close()
            self.writer.close()

    # ---------------------------------------------------------- state

    @property
    def pending_points(self) -> int:
        """Points held in memory, not yet sent or spooled."""
        return len(self._lines)

    @property
    def stats(self) -> dict[str, int]:
        """Counters (points written, spooled, replayed, dropped, rejected; torn records) and backlog."""
        return self.sender.stats.snapshot() | {
            "backlog": self.spool.pending_points,
            "pending": len(self._lines),
            "spool_bytes": self.spool.size_bytes,
        }

    # ---------------------------------------------------------- internals

    def _take_batches(self, whole: bool) -> list[Batch]:
        """Cut pending lines into batches of batch_size; the remainder too when `whole`."""
        size = self.cfg.batch_size
        n = len(self._lines) if whole else len(self._lines) - len(self._lines) % size
        batches = [
            Batch(b"\n".join(self._lines[i:min(i + size, n)]), min(size, n - i)) for i in range(0, n, size)
        ]
        del self._lines[:n]
        self._pending_since = None if not self._lines else self._pending_since
        return batches

    def _flush(self, now: float, whole: bool) -> None:
        for batch in self._take_batches(whole):
            self.sender.submit(batch, now)

    def _cap_pending(self) -> None:
        """Without ticks the memory buffer would grow for ever: spool the excess."""
        if len(self._lines) >= PENDING_BATCHES_MAX * self.cfg.batch_size:
            log.warning("influxdb: %d points pending without a tick; spooling them", len(self._lines))
            for batch in self._take_batches(whole=True):
                self.sender.spool_batch(batch)
