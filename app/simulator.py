"""A built-in simulated meter: a sunny day with passing clouds and a household load, sent as
Fluvius (e-MUCS P1 5.0.2.17) telegrams with a valid CRC16.

Used by `make demo`, the benchmarks and the end-to-end tests; deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app.framing.dsmr import crc16_arc

BRUSSELS = ZoneInfo("Europe/Brussels")


@dataclass
class MeterState:
    """Counters that persist from one telegram to the next (kWh, m3)."""

    import_t1_kwh: float = 1234.567
    import_t2_kwh: float = 2345.678
    export_t1_kwh: float = 345.678
    export_t2_kwh: float = 123.456
    gas_m3: float = 2164.106
    max_demand_kw: float = 2.5
    demand_sum_kw_s: float = 0.0
    demand_start: datetime | None = None
    gas_time: datetime | None = None


class SimulatedMeter:
    """Generates telegrams at meter times `start`, `start + step`, ..."""

    def __init__(self, start: datetime, step_s: float = 1.0, seed: int = 1, pv_peak_w: float = 6000.0) -> None:
        self.t = start.astimezone(BRUSSELS)
        self.step = timedelta(seconds=step_s)
        self.rng = random.Random(seed)
        self.pv_peak_w = pv_peak_w
        self.state = MeterState()
        self._cloud = 1.0
        self._kettle_until: datetime | None = None

    # ---------------------------------------------------------------- physics

    def pv_w(self, t: datetime) -> float:
        """Solar production: a sine from 06:00 to 21:00 local, dimmed by passing clouds."""
        h = t.hour + t.minute / 60 + t.second / 3600
        sun = max(0.0, math.sin(math.pi * (h - 6.0) / 15.0)) ** 1.3
        if self.rng.random() < 0.02:
            self._cloud = self.rng.uniform(0.25, 0.7)  # a cloud passes
        else:
            self._cloud += (1.0 - self._cloud) * 0.08
        return self.pv_peak_w * sun * self._cloud

    def load_w(self, t: datetime) -> float:
        """Household load: base, morning and evening peaks, now and then a kettle."""
        h = t.hour + t.minute / 60
        base = 280.0 + 600.0 * math.exp(-((h - 7.5) ** 2) / 0.8) + 1400.0 * math.exp(-((h - 19.0) ** 2) / 2.0)
        if self._kettle_until is None and self.rng.random() < 0.004:
            self._kettle_until = t + timedelta(minutes=3)
        if self._kettle_until is not None:
            if t < self._kettle_until:
                base += 2000.0
            else:
                self._kettle_until = None
        return base * self.rng.uniform(0.9, 1.1)

    # ---------------------------------------------------------------- telegrams

    def next(self) -> bytes:
        """The telegram for the current meter time; then advance the clock."""
        t = self.t
        pv = self.pv_w(t)
        load = self.load_w(t)
        net = load - pv
        imp_w, exp_w = max(net, 0.0), max(-net, 0.0)
        s = self.state
        dt_h = self.step.total_seconds() / 3600
        night = t.hour < 7 or t.hour >= 22 or t.weekday() >= 5
        if night:
            s.import_t2_kwh += imp_w / 1000 * dt_h
            s.export_t2_kwh += exp_w / 1000 * dt_h
        else:
            s.import_t1_kwh += imp_w / 1000 * dt_h
            s.export_t1_kwh += exp_w / 1000 * dt_h
        quarter = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
        if s.demand_start != quarter:
            s.demand_start, s.demand_sum_kw_s = quarter, 0.0
        s.demand_sum_kw_s += imp_w / 1000 * self.step.total_seconds()
        demand_kw = s.demand_sum_kw_s / 900
        s.max_demand_kw = max(s.max_demand_kw, demand_kw)
        five = t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0)
        if s.gas_time != five:
            s.gas_time = five
            s.gas_m3 += self.rng.uniform(0.0, 0.08) if t.hour in (6, 7, 8, 18, 19, 20, 21) else 0.005
        phases = [self.rng.uniform(0.25, 0.45) for _ in range(3)]
        total = sum(phases)
        volts = [230.0 + self.rng.uniform(-3, 3) + exp_w / 2000 for _ in range(3)]
        lines = [
            "/FLU5\\253769484_A",
            "",
            "0-0:96.1.4(50217)",
            "0-0:96.1.1(3153414733313030373231333236)",
            f"0-0:1.0.0({_ts(t)})",
            f"1-0:1.8.1({s.import_t1_kwh:010.3f}*kWh)",
            f"1-0:1.8.2({s.import_t2_kwh:010.3f}*kWh)",
            f"1-0:2.8.1({s.export_t1_kwh:010.3f}*kWh)",
            f"1-0:2.8.2({s.export_t2_kwh:010.3f}*kWh)",
            f"0-0:96.14.0({2 if night else 1:04d})",
            f"1-0:1.4.0({demand_kw:06.3f}*kW)",
            f"1-0:1.6.0({_ts(quarter)})({s.max_demand_kw:06.3f}*kW)",
            f"1-0:1.7.0({imp_w / 1000:06.3f}*kW)",
            f"1-0:2.7.0({exp_w / 1000:06.3f}*kW)",
        ]
        share = [p / total for p in phases]
        lines += [f"1-0:{c}.7.0({imp_w * f / 1000:06.3f}*kW)" for c, f in zip((21, 41, 61), share, strict=True)]
        lines += [f"1-0:{c}.7.0({exp_w * f / 1000:06.3f}*kW)" for c, f in zip((22, 42, 62), share, strict=True)]
        lines += [f"1-0:{c}.7.0({v:05.1f}*V)" for c, v in zip((32, 52, 72), volts, strict=True)]
        lines += [f"1-0:{c}.7.0({abs(net) * f / v:06.2f}*A)"
                  for c, f, v in zip((31, 51, 71), share, volts, strict=True)]
        lines += [
            "0-0:96.3.10(1)",
            "0-0:17.0.0(999.9*kW)",
            "1-0:31.4.0(999*A)",
            "0-0:96.13.0()",
            "0-1:24.1.0(003)",
            "0-1:96.1.1(37464C4F32313233303838303237)",
            "0-1:24.4.0(1)",
            f"0-1:24.2.3({_ts(five)})({s.gas_m3:09.3f}*m3)",
            "!",
        ]
        body = "\r\n".join(lines).encode("ascii")
        self.t = t + self.step
        return body + f"{crc16_arc(body):04X}\r\n".encode("ascii")

    def telegrams(self, count: int) -> Iterator[bytes]:
        """`count` consecutive telegrams."""
        for _ in range(count):
            yield self.next()


def _ts(t: datetime) -> str:
    """YYMMDDhhmmss + W/S as a DSMR meter writes its local time."""
    local = t.astimezone(BRUSSELS)
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")
