"""Main imports a meter kind's shared I/O library before the fork (the meter processes share its pages: PSS per
meter), never python-kasa (only a Tapo meter's own process imports it)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import sys
from app.meters import preload
names = preload(["modbus", "tapo", "http", "mqtt", "iec62056-21"])
assert names == ["pymodbus.client", "pymodbus.exceptions", "pymodbus.framer"], names
assert "pymodbus.client" in sys.modules
assert not any(m == "kasa" or m.startswith("kasa.") for m in sys.modules), "python-kasa imported in main"
assert preload([]) == []
print("ok")
"""


def test_preload_imports_pymodbus_and_never_python_kasa() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_without_a_modbus_meter_main_imports_no_pymodbus() -> None:
    check = "import sys\nfrom app.meters import preload\npreload(['http'])\nassert 'pymodbus' not in sys.modules\n"
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
