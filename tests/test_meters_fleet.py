"""Main's meter fleet against a meters_dir: each file judged alone, only the changed meters touched, the
post-processor told of the new set and of a stopping meter at once; a bad file or a set that breaks a relay's
condition is not applied (the running meters go on)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from app import config as config_mod
from app.meters.fleet import Fleet
from app.supervision import Child


class StubSupervisor:
    """Records what the fleet asks (no process is started)."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.added: list[str] = []
        self.removed: list[str] = []

    def add(self, c: Child) -> None:
        self.children.append(c)
        self.added.append(c.name)

    def remove(self, c: Child) -> None:
        self.children.remove(c)
        self.removed.append(c.name)


def _meter(d: Path, name: str, poll: str = "1 s", url: str = "http://127.0.0.1:9/x") -> None:
    path = d / f"{name}.ini"
    path.write_text(f"[meter:{name}]\nprotocol = http\nurl = {url}\npoll_interval = {poll}\n")
    st = path.stat()  # a new mtime even within the same clock tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000 * (1 + len(poll) + len(url))))


def _messages(fleet: Fleet) -> list[tuple[Any, ...]]:
    out = []
    while fleet.control_r.poll():
        out.append(fleet.control_r.recv())
    return out


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Fleet, StubSupervisor, Path]:
    d = tmp_path / "meters.d"
    d.mkdir()
    _meter(d, "heat")
    _meter(d, "pv")
    ini = tmp_path / "main.ini"
    ini.write_text(f"[general]\nmeters_dir = {d}\n[meter]\nsource = /dev/null\n[meter:main_sub]\nprotocol = http\n"
                   "url = http://127.0.0.1:9/y\n[relay:charger]\npin = GPIO17\non_when = pv.power < -500 W\n")
    cfg = config_mod.load(ini)
    ctx = multiprocessing.get_context("fork")
    fleet = Fleet(ctx, cfg, ctx.Event(), lambda *a: None, "info", spare=4)
    sup = StubSupervisor()
    sup.children = fleet.initial_children()
    return fleet, sup, d


def test_only_the_changed_meters_are_touched(setup: tuple[Fleet, StubSupervisor, Path]) -> None:
    fleet, sup, d = setup
    assert sorted(fleet.specs) == ["heat", "main_sub", "pv"] and [m.name for m in fleet.base] == ["main_sub"]
    fleet.scan(sup)  # nothing changed
    assert _messages(fleet) == [] and sup.added == []
    _meter(d, "plug")
    _meter(d, "heat", poll="5 s")
    fleet.scan(sup)
    msgs = _messages(fleet)
    assert [m[0] for m in msgs] == ["meters", "down"]
    assert sorted(m.name for m in msgs[0][1]) == ["heat", "main_sub", "plug", "pv"]
    assert msgs[1][1:4] == ("heat", "offline", "restarting: its settings changed")
    assert sup.added == ["meter-plug"]  # heat waits for its old process to end
    old_heat = fleet.retiring["heat"][0]
    assert old_heat.retiring and old_heat.args[3].is_set() and not old_heat.args[3].everyone.is_set()
    fleet.round(sup, 0.0)  # its process (never started here) has ended: the new one starts
    assert sup.removed == ["meter-heat"] and sup.added == ["meter-plug", "meter-heat"]
    assert fleet.specs["heat"].poll_interval == 5.0
    (d / "plug.ini").unlink()
    fleet.scan(sup)
    assert [m[0] for m in _messages(fleet)] == ["meters", "down"] and "plug" not in fleet.specs
    _meter(d, "plug", url="http://127.0.0.1:9/again")  # back before its old process has ended
    fleet.scan(sup)
    assert sup.added == ["meter-plug", "meter-heat"] and "plug" in fleet.pending  # never two at once
    fleet.round(sup, 0.0)
    assert sup.added[-1] == "meter-plug" and [c.name for c in sup.children].count("meter-plug") == 1


def test_a_bad_file_is_refused_alone_and_a_running_meter_keeps_its_settings(
        setup: tuple[Fleet, StubSupervisor, Path], caplog: pytest.LogCaptureFixture) -> None:
    fleet, sup, d = setup
    before = fleet.specs["heat"]
    with caplog.at_level(logging.ERROR, logger="app.main"):
        (d / "heat.ini").write_text("[meter:heat]\nprotocol = http\npoll_interval = 1 s\n")
        (d / "bad.ini").write_text("[meter:bad]\nprotocol = modbus\nsource = tcp://h:502\npreset = sdm630\n"
                                   "unit_id = x\n")
        _meter(d, "plug")
        fleet.scan(sup)
        fleet.scan(sup)  # logged once per file version
    text = caplog.text
    assert text.count("heat.ini not applied (it runs on with its last good settings); the other meters go on: "
                      "[meter:heat] url: missing") == 1
    assert text.count("bad.ini not applied; the other meters go on: [meter:bad] unit_id = 'x'") == 1
    assert fleet.specs["heat"] is before and "bad" not in fleet.specs and sup.added == ["meter-plug"]


def test_a_set_that_breaks_a_relay_condition_is_not_applied(setup: tuple[Fleet, StubSupervisor, Path],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    fleet, sup, d = setup
    with caplog.at_level(logging.ERROR, logger="app.main"):
        (d / "pv.ini").unlink()
        fleet.scan(sup)
    assert "changed, not applied (the running meters go on): [relay:charger] on_when" in caplog.text
    assert "pv" in fleet.specs and _messages(fleet) == [] and not fleet.retiring
    _meter(d, "pv")
    fleet.scan(sup)  # back as it was: nothing to do
    assert _messages(fleet) == [] and sup.added == []


def test_a_name_in_the_main_ini_and_a_file_is_refused(setup: tuple[Fleet, StubSupervisor, Path],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    fleet, sup, d = setup
    with caplog.at_level(logging.ERROR, logger="app.main"):
        _meter(d, "main_sub")
        fleet.scan(sup)
    assert "[meter:main_sub] is in both" in caplog.text and sup.added == []


def test_a_killed_meter_restarts_on_a_fresh_queue(setup: tuple[Fleet, StubSupervisor, Path]) -> None:
    """A process killed by a signal may have held its queue's lock: the restart must not write to that queue."""
    fleet, sup, _d = setup
    pv = next(c for c in sup.children if c.name == "meter-pv")
    old_q, old_slot = pv.args[2], fleet.slot_of["pv"]
    free = len(fleet.free)
    pv.process = cast(Any, SimpleNamespace(exitcode=None))  # killed a moment ago: not reaped yet
    fleet.died(pv, "hung (no heartbeat for 10.2 s); killed it", 1.0)
    assert pv.args[2] is not old_q and fleet.slot_of["pv"] != old_slot and len(fleet.free) == free - 1
    assert any(q is old_q for q in pv.args[0])  # the new process closes its ends of the old queue
    assert old_slot not in fleet.free  # retired for good
    msg = fleet.control_r.recv()
    assert msg[:4] == ("down", "pv", "error",
                       "its process hung (no heartbeat for 10.2 s); killed it; restarting in 1 s")
