"""`--report` and `--import`: the command-line side of the history store (main.py only dispatches here).

    --report day|month|year|quarter|hour|cost [--from DATE] [--to DATE] [--json] [--csv] [--tariff NAME] [--compare]
Tables for people, `--json` one object per period (the REST API's objects), `--csv` the same periods
in the [csv] dialect with units in the header. Dates are local, `--to` exclusive.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from app.config import Config
from app.store.query import HistoryQuery, as_date

KINDS = ("day", "month", "year", "quarter", "hour", "cost")
_NUM = ("import_kwh", "export_kwh", "import_kwh_t1", "import_kwh_t2", "export_kwh_t1", "export_kwh_t2",
        "gas_m3", "peak_kw")
_COST = ("total", "import", "export", "capacity", "fixed", "gas")
_UNITS = {"import_kwh": "kWh", "export_kwh": "kWh", "import_kwh_t1": "kWh", "import_kwh_t2": "kWh",
          "export_kwh_t1": "kWh", "export_kwh_t2": "kWh", "gas_m3": "m3", "peak_kw": "kW"}


def default_span(kind: str, today: date) -> tuple[date | None, date | None]:
    """What a report covers without --from/--to: today (quarter, hour), this month (day),
    this year (month, cost), everything (year)."""
    tomorrow = today + timedelta(days=1)
    if kind in ("quarter", "hour"):
        return today, tomorrow
    if kind == "day":
        return date(today.year, today.month, 1), tomorrow
    if kind in ("month", "cost"):
        return date(today.year, 1, 1), tomorrow
    return None, None


def _fmt(value: float, decimal: str) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    text = "0" if text in ("-0", "") else text
    return text.replace(".", decimal) if decimal != "." else text


def write_csv(rows: list[dict[str, Any]], currency: str, delimiter: str, decimal: str, out: TextIO) -> None:
    """The periods as CSV, one row each, units in the header."""
    head = ["start", "end", *(_csv_name(k) for k in _NUM), "peak_at", *(f"cost_{k} ({currency})" for k in _COST)]
    out.write(delimiter.join(head) + "\n")
    for r in rows:
        cells = [r["start"], r["end"], *(_fmt(r[k], decimal) for k in _NUM), r["peak_at"] or "",
                 *(_fmt(r["cost"][k], decimal) for k in _COST)]
        out.write(delimiter.join(cells) + "\n")


def _csv_name(key: str) -> str:
    """`import_kwh_t1` -> `import_t1 (kWh)`."""
    unit = _UNITS[key]
    base = key.replace("_kwh", "").replace("_m3", "").replace("_kw", "")
    return f"{base} ({unit})"


def _label(kind: str, start: str) -> str:
    t = datetime.fromisoformat(start)
    return {"quarter": t.strftime("%Y-%m-%d %H:%M%z"), "hour": t.strftime("%Y-%m-%d %H:%M%z"),
            "day": t.strftime("%Y-%m-%d %a"), "month": t.strftime("%Y-%m"), "year": t.strftime("%Y")}[kind]


def write_table(kind: str, rows: list[dict[str, Any]], currency: str, out: TextIO) -> None:
    """A table for people, with a total line."""
    cols = ("import kWh", "T1", "T2", "export kWh", "T1", "T2", "gas m3", "peak kW", f"cost {currency}")
    width = max(len(_label(kind, rows[0]["start"])) if rows else 0, 10)
    out.write(f"{'period':<{width}}" + "".join(f"{c:>11}" for c in cols) + "\n")
    total = dict.fromkeys(_NUM, 0.0)
    cost = 0.0
    for r in rows:
        vals = (r["import_kwh"], r["import_kwh_t1"], r["import_kwh_t2"], r["export_kwh"], r["export_kwh_t1"],
                r["export_kwh_t2"], r["gas_m3"], r["peak_kw"], r["cost"]["total"])
        out.write(f"{_label(kind, r['start']):<{width}}" + "".join(f"{v:>11.3f}" for v in vals[:-1])
                  + f"{vals[-1]:>11.2f}\n")
        for k in _NUM:
            total[k] = max(total[k], r[k]) if k == "peak_kw" else total[k] + r[k]
        cost += r["cost"]["total"]
    if len(rows) > 1:
        sums = (total["import_kwh"], total["import_kwh_t1"], total["import_kwh_t2"], total["export_kwh"],
                total["export_kwh_t1"], total["export_kwh_t2"], total["gas_m3"], total["peak_kw"])
        out.write(f"{'total':<{width}}" + "".join(f"{v:>11.3f}" for v in sums) + f"{cost:>11.2f}\n")
    if not rows:
        out.write("(no data in this period)\n")


def write_cost(c: dict[str, Any], compare: bool, out: TextIO) -> None:
    """The cost report for people."""
    cur = c["currency"]
    out.write(f"cost from {c['from']} to {c['to']} (exclusive), {cur}\n")
    out.write(f"{'month':<10}" + "".join(f"{k:>11}" for k in _COST) + "\n")
    for p in c["periods"]:
        out.write(f"{p['start'][:7]:<10}" + "".join(f"{p[k]:>11.2f}" for k in _COST) + "\n")
    out.write(f"{'total':<10}" + "".join(f"{c['total'][k]:>11.2f}" for k in _COST) + "\n")
    proj = c["projection"]
    for name in ("month", "year"):
        if name in proj:
            whole = proj[name].get("projected", proj[name])
            out.write(f"{'this ' + name:<10}" + "".join(f"{whole.get(k, 0.0):>11.2f}" for k in _COST)
                      + f"  (projected, {proj[name].get('start', '')[:10]} to {proj[name].get('end', '')[:10]})\n")
    out.write(f"projection: {proj.get('method', '')}\n")
    if compare:
        out.write("\ntariff comparison, same use, cheapest first:\n")
        for n, t in enumerate(c["compare"], 1):
            out.write(f"{n:>3}. {t['tariff']:<20}{t['total']:>11.2f} {t.get('currency', cur)}\n")


def run_report(cfg: Config, kind: str, start: str | None, end: str | None, as_json: bool = False,
               as_csv: bool = False, tariff: str | None = None, compare: bool = False,
               out: TextIO = sys.stdout) -> int:
    """Print a report; 0 done, 2 bad arguments."""
    try:
        s, e = as_date(start, "--from"), as_date(end, "--to")
    except ValueError as exc:
        print(f"smartmeter: {exc}", file=sys.stderr)
        return 2
    ds, de = default_span(kind, datetime.now(ZoneInfo(cfg.meter.timezone)).date())
    s = s if start is not None else ds
    e = e if end is not None else de
    q = HistoryQuery(cfg)
    try:
        if kind == "cost":
            c = q.cost(s, e, tariff)
            if as_json:
                out.write(json.dumps(c if not compare else {"compare": c["compare"], "currency": c["currency"],
                                                            "from": c["from"], "to": c["to"]}) + "\n")
            else:
                write_cost(c, compare, out)
            return 0
        rows = q.rows(kind, s, e, tariff)
        currency = q.tariffs[tariff or ""].currency
        if as_json:
            for r in rows:
                out.write(json.dumps(r) + "\n")
        elif as_csv:
            write_csv(rows, currency, cfg.csv.delimiter, cfg.csv.decimal, out)
        else:
            write_table(kind, rows, currency, out)
        return 0
    except ValueError as exc:
        print(f"smartmeter: {exc}", file=sys.stderr)
        return 2
    finally:
        q.close()


def run_import_cli(cfg: Config, paths: list[str]) -> int:
    """`--import`: 0 done, 1 nothing imported or a file failed."""
    from app.store.importer import run_import

    try:
        st = run_import(cfg, paths)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"smartmeter: import failed: {exc}", file=sys.stderr)
        return 1
    rate = st.readings / st.seconds if st.seconds > 0 else 0.0
    print(f"imported {st.readings} readings from {st.files} files into {cfg.history.path}: {st.quarters} "
          f"quarters in {st.seconds:.1f} s ({rate:,.0f} readings/s); {st.rejected} frames rejected, "
          f"{st.no_time} without meter time skipped, {st.implausible} implausible readings not stored")
    return 0 if st.readings else 1
