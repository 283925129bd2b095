"""The control state kept over a restart: each min_daily relay's run time today ([control] state_file).

    {"version": 1, "saved": "2026-01-13T14:02:00+00:00",
     "daily": {"boiler": {"day": "2026-01-13", "run_s": 3600.0}}}

Written atomically (a temporary file in the same directory, fsync, rename), so a power cut leaves the
old file or the new one, never half of one. A missing, unreadable or malformed file is logged and
ignored: the day's count then starts from zero, as without the file. The day is the meter's local day;
a file from another day counts for nothing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

log = logging.getLogger("app.control")
VERSION = 1


def load_daily(path: str) -> dict[str, tuple[date, float]]:
    """Saved run times per relay; {} when there is no usable file (logged, never raised)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        out: dict[str, tuple[date, float]] = {}
        for name, entry in data.get("daily", {}).items():
            run_s = float(entry["run_s"])
            if not 0.0 <= run_s <= 86400.0:
                raise ValueError(f"relay {name}: run_s {run_s} out of range")
            out[str(name)] = (date.fromisoformat(entry["day"]), run_s)
        return out
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("control state %s not read (%s): min_daily run times start from zero today", path, exc)
        return {}


def save_daily(path: str, runs: Mapping[str, tuple[date, float]]) -> None:
    """Write the run times atomically; OSError when the directory is missing or not writable."""
    body = {"version": VERSION, "saved": datetime.now(UTC).isoformat(timespec="seconds"),
            "daily": {name: {"day": day.isoformat(), "run_s": round(run_s, 1)} for name, (day, run_s) in runs.items()}}
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
