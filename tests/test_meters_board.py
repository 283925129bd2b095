"""The board while main restarts a meter: offline / error at once with the reason (not after offline_after),
the relays that need it held safe, the old process's last readings never bring it back, the new one's do;
meters added and removed while running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.meters.board import Board
from app.meters.sample import Sample, to_reading

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
NEEDS = {"charger": frozenset({"pv.power"}), "boiler": frozenset({"export"})}


def _online_board() -> Board:
    b = Board("grid", "grid", 30.0, {"pv": ("solar", 3600.0)}, 9200.0, now=0.0)
    b.update(to_reading(Sample(power_w=-3000.0), "pv", "solar", "modbus", 1, T0), 1.0)
    b.update(to_reading(Sample(power_w=500.0), "", "", "dsmr", 1, T0), 1.0)
    b.check(1.0)
    return b


def test_a_restart_is_offline_at_once_and_the_old_processes_last_reading_does_not_undo_it() -> None:
    b = _online_board()
    assert b.blocked(NEEDS, 2.0) == {}
    b.down("pv", "offline", "restarting: its settings changed", (T0 + timedelta(seconds=5)).timestamp())
    assert [str(c) for c in b.check(2.0)] == ["meter pv: online -> offline (restarting: its settings changed)"]
    assert b.blocked(NEEDS, 2.0) == {"charger": "stale: meter pv offline"}  # the P1 relay is not held
    assert "pv.power" not in b.quantities(2.0)
    old = to_reading(Sample(power_w=-3000.0), "pv", "solar", "modbus", 2, T0 + timedelta(seconds=4))
    b.update(old, 2.5)  # sent before the stop, taken off the queue after it
    assert b.check(2.5) == [] and b.blocked(NEEDS, 2.5) != {}
    new = to_reading(Sample(power_w=-2000.0), "pv", "solar", "modbus", 1, T0 + timedelta(seconds=6))
    b.update(new, 3.0)
    assert [str(c) for c in b.check(3.0)] == ["meter pv: offline -> online"]
    assert b.blocked(NEEDS, 3.0) == {} and b.quantities(3.0)["pv.power"] == -2000.0


def test_a_dead_process_is_error_with_the_reason_at_once() -> None:
    b = _online_board()
    b.down("pv", "error", "its process exited (code -9); restarting in 1 s", T0.timestamp() + 1)
    [change] = b.check(1.5)  # offline_after is an hour: only main's word makes it
    assert (change.new, change.reason) == ("error", "its process exited (code -9); restarting in 1 s")
    assert b.blocked(NEEDS, 1.5) == {"charger": "stale: meter pv error"}
    b.down("grid", "error", "ignored", T0.timestamp())  # the [meter] meter is left to stale_after
    assert b.status["grid"] == "online"


def test_meters_added_and_removed_while_running() -> None:
    b = _online_board()
    b.set_meters({"pv": ("solar", 10.0), "heat": ("building", 5.0)}, 2.0)
    assert b.status["heat"] == "offline" and b.reasons["heat"] == "no reading yet"
    assert b.offline_s["pv"] == 10.0 and b.status["pv"] == "online"  # kept its state
    b.set_meters({"heat": ("building", 5.0)}, 3.0)
    assert "pv" not in b.roles and "pv" not in b.latest and "pv.power" not in b.quantities(3.0)
    assert set(b.roles) == {"grid", "heat"}
    b.update(to_reading(Sample(power_w=-1.0), "pv", "solar", "modbus", 9, T0), 3.5)  # a removed meter's
    assert "pv" not in b.latest


@given(st.lists(st.tuples(st.sampled_from(["down", "old", "new"]), st.integers(0, 10_000)), max_size=12))
def test_after_a_down_only_a_reading_taken_later_brings_it_online(events: list[tuple[str, int]]) -> None:
    """`dt`: ms after (new) or before (old) main's word."""
    b = _online_board()
    down_at = T0 + timedelta(seconds=100)
    b.down("pv", "offline", "restarting", down_at.timestamp())
    expect_online = False
    for i, (kind, dt) in enumerate(events):
        now = 2.0 + i
        if kind == "down":
            b.down("pv", "offline", "restarting", down_at.timestamp())
            expect_online = False
        else:
            taken = down_at + timedelta(milliseconds=dt if kind == "new" else -dt)
            b.update(to_reading(Sample(power_w=-1.0), "pv", "solar", "modbus", i, taken), now)
            if kind == "new" and dt > 0:
                expect_online = True
        b.check(now)
        assert b.online("pv", now) is expect_online
        assert (b.blocked(NEEDS, now) == {}) is expect_online
