"""The post-processor told of a new meter set while running (main's fleet): a meter added gets its own CSV file
set at once, a removed one's sink finishes and closes and its late readings go nowhere, the [meter] meter's files
never get another meter's rows; the board follows (no process here: PostProcessor itself)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from app import config as config_mod
from app.meters.sample import Sample, to_reading
from app.pipeline import PostProcessor
from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import csv_rows, wait_for


def test_meters_come_and_go_with_their_own_csv_files(tmp_path: Path) -> None:
    d = tmp_path / "meters.d"
    d.mkdir()
    cfg = config_mod.loads(f"[general]\nmeters_dir = {d}\n[meter]\nsource = /dev/null\nprotocol = dsmr\n"
                           f"[csv]\nenabled = yes\ndirectory = {tmp_path / 'csv'}\ninterval = 0\n"
                           f"flush_interval = 100 ms\n[history]\nenabled = no\n")
    heat = config_mod.loads("[meter]\nsource = /dev/null\n[meter:heat]\nprotocol = http\n"
                            "url = http://127.0.0.1:9/x\nrole = building\n").meters[0]
    pp = PostProcessor(cfg)
    pp.start()
    try:
        p1 = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0)
        from app.framing.auto import make_framer
        from app.protocols.route import FrameDecoder

        framer, decoder = make_framer("dsmr", 1 << 16), FrameDecoder(BRUSSELS)
        frames = framer.feed(b"".join(p1.telegrams(3)))
        for n, f in enumerate(frames):
            pp.dispatch(decoder.decode(f, datetime.now(UTC), n + 1))
        pp.on_control(("meters", (heat,)))
        assert pp.board.roles["heat"] == "building" and pp.board.status["heat"] == "offline"
        for seq in (1, 2):
            pp.dispatch(to_reading(Sample(power_w=1500.0 + seq), "heat", "building", "http", seq, datetime.now(UTC)))
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "heat")) == 2, 10)
        pp.on_control(("down", "heat", "offline", "restarting: its settings changed", time.time()))
        assert pp.board.status["heat"] == "offline" and "restarting" in pp.board.reasons["heat"]
        pp.on_control(("meters", ()))
        assert "heat" not in pp.board.roles and [w.sink.name for w in pp.retired] == ["csv-heat"]
        pp.dispatch(to_reading(Sample(power_w=9.0), "heat", "building", "http", 3, datetime.now(UTC)))  # late
    finally:
        assert pp.close()
    assert len(csv_rows(tmp_path / "csv" / "heat")) == 2  # nothing after its removal
    assert len(csv_rows(tmp_path / "csv")) == 3  # the P1 meter's own files: its three readings only
