"""The sink's own line protocol against influxdb-client's Point (the oracle; a test dependency only),
and the sink module importing no client library (it cost the post-processor ~16 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import Point as ClientPoint
from influxdb_client import WritePrecision

from app.sinks.influx import Point

ROOT = Path(__file__).resolve().parents[1]
# the oracle warns about measurement names starting with "#" (which both format the same way)
pytestmark = pytest.mark.filterwarnings("ignore:The measurement name:SyntaxWarning")
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), names)


@given(names, st.dictionaries(names, st.one_of(st.none(), names), max_size=4),
       st.dictionaries(names, values, max_size=6), st.one_of(st.none(), st.integers(0, 2**34)))
def test_line_protocol_is_the_clients(measurement: str, tags: dict[str, str | None],
                                      fields: dict[str, object], at: int | None) -> None:
    ours, theirs = Point(measurement), ClientPoint(measurement)
    for k, v in tags.items():
        ours.tag(k, v)
        theirs.tag(k, v)
    for k, f in fields.items():
        ours.field(k, f)
        theirs.field(k, f)
    if at is not None:
        ours.time(at)
        theirs.time(at, WritePrecision.S)
    assert ours.to_line_protocol() == theirs.to_line_protocol()


def test_the_sink_imports_no_influx_client() -> None:
    code = ("import sys; import app.sinks.influx; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('influxdb_client', 'urllib3', 'reactivex')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
