"""Sinks: one module per sink, each a pure converter (reading -> row/points/messages) and a
thin writer.

The post-processor runs every sink in its own worker thread (see `app.pipeline.SinkWorker`),
so a sink may block in its own methods without delaying relay decisions or the other sinks.
A sink that cannot write (server down, disk full) keeps what it holds (spool, buffer),
backs off and says so in the log; it never raises out of these methods for an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from app.records import ReaderStatus, Reading

if TYPE_CHECKING:
    from app.control.override import RelayView


class SinkIncomplete(Exception):
    """Raised by close() when a sink had to leave data unwritten (the exit code says so)."""


class Sink:
    """Base class with no-op hooks; subclasses override what they need."""

    name = "sink"
    # Whether every reading must arrive (CSV, InfluxDB: history). A live-data sink (MQTT) sets it
    # False: in a fast replay it is skipped over rather than slowing the replay down.
    lossless = True

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """One reading and the relay states after it was processed."""

    def relay_event(self, states: Mapping[str, bool], at: datetime, reason: str) -> None:
        """Relay states changed outside a reading (stale data, override, shutdown)."""

    def relay_detail(self, view: Mapping[str, RelayView]) -> None:
        """Each relay's state, mode, last switch reason and pending command, when any of them changed."""

    def status(self, status: ReaderStatus) -> None:
        """Latest reader counters (telegrams ok, CRC errors, dropped, lag)."""

    def meter_status(self, meter: str, status: str, reason: str) -> None:
        """A meter went online / offline / error ([meter:NAME] sections; logged once per change)."""

    def tick(self, now: float) -> None:
        """Called about once a second (monotonic `now`) for time-based flushes and retries."""

    def close(self) -> None:
        """Flush everything and release resources; idempotent."""


class MeterOnly(Sink):
    """A sink that keeps one file set / one topic tree per meter: only `meter`'s readings reach it
    ("" is the [meter] meter, which also gets the relay events and reader counters)."""

    def __init__(self, sink: Sink, meter: str) -> None:
        self.sink = sink
        self.meter = meter
        self.name = f"{sink.name}-{meter}" if meter else sink.name
        self.lossless = sink.lossless

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Only this meter's readings."""
        if reading.meter == self.meter:
            self.sink.write(reading, relays)

    def relay_event(self, states: Mapping[str, bool], at: datetime, reason: str) -> None:
        """The [meter] meter's sink shows the relays."""
        if not self.meter:
            self.sink.relay_event(states, at, reason)

    def relay_detail(self, view: Mapping[str, RelayView]) -> None:
        """The [meter] meter's sink shows the relays."""
        if not self.meter:
            self.sink.relay_detail(view)

    def status(self, status: ReaderStatus) -> None:
        """The P1 reader's counters belong to the [meter] meter."""
        if not self.meter:
            self.sink.status(status)

    def meter_status(self, meter: str, status: str, reason: str) -> None:
        """Passed on to the sink of that meter."""
        if meter == self.meter:
            self.sink.meter_status(meter, status, reason)

    def tick(self, now: float) -> None:
        """Passed on."""
        self.sink.tick(now)

    def close(self) -> None:
        """Passed on."""
        self.sink.close()
