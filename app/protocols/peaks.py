"""Fluvius `0-0:98.1.0`: the last 13 months' quarter-hour peaks as structured data (pure).

    0-0:98.1.0(3)(1-0:1.6.0)(1-0:1.6.0)(231101000000W)(231031120000W)(01.747*kW)(...)(...)(...)
               |  |          |          |              |              `- the month's peak, kW
               |  |          |          |              `- when that quarter-hour ended
               |  |          |          `- the billing period's stamp: 00:00 on the 1st of the NEXT month
               |  `----------`- the object the values come from (1-0:1.6.0, max demand)
               `- how many months follow
A peak stamp the meter could not fill (`632525252525W`) gives `at` None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.protocols.dsmr import parse_timestamp
from app.records import Value

MONTH_PEAKS_REF = "0-0:98.1.0"


@dataclass(frozen=True, slots=True)
class PeakRecord:
    """One month's peak as the meter billed it: the local month (its first day), when, kW."""

    month: date
    at: datetime | None
    kw: float


def month_peaks(value: Value, tz: ZoneInfo) -> list[PeakRecord]:
    """The months of a 0-0:98.1.0 value, oldest first; [] for any other layout (e.g. Hungarian billing data)."""
    groups = value.groups
    if len(groups) < 3 or not groups[1][0].endswith("1.6.0"):
        return []
    out: dict[date, PeakRecord] = {}
    body = groups[3:]
    for i in range(0, len(body) - 2, 3):
        stamp = parse_timestamp(body[i][0], tz)
        if stamp is None:
            continue
        try:
            kw = float(body[i + 2][0])
        except ValueError:
            continue
        unit = (body[i + 2][1] or "kW")
        if unit == "W":
            kw /= 1000.0
        local = stamp.astimezone(tz)
        if local.day == 1 and local.hour == 0 and local.minute == 0:
            local -= timedelta(days=1)  # the period ends at 00:00 on the 1st: it is the month before
        month = date(local.year, local.month, 1)
        out[month] = PeakRecord(month, parse_timestamp(body[i + 1][0], tz), kw)
    return [out[m] for m in sorted(out)]


def peaks_json(value: Value, tz: ZoneInfo) -> list[dict[str, object]]:
    """The `month_peaks` list of `--decode`: month, at, kw."""
    return [{"month": p.month.strftime("%Y-%m"), "at": p.at.isoformat() if p.at else None, "kw": p.kw}
            for p in month_peaks(value, tz)]
