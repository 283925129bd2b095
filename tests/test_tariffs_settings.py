"""[tariff] and [tariff:NAME]: every key, the both-ways error, unique names, the prices file at config load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app import config
from app.errors import ConfigError
from app.tariffs.settings import TariffConfig, parse_kw

ROOT = Path(__file__).resolve().parents[1]

FULL = """
[tariff]
currency = eur
import_price_t1 = 0.32        ; day
import_price_t2 = 0.26
export_price = 0.04
fixed_per_year = 120
fixed_per_month = 5.5
fixed_per_day = 0.1
capacity_price = 53.0
capacity_floor = 2500 W
gas_price = 1.10
"""


def test_every_key() -> None:
    t = config.loads(FULL).tariff
    assert t == TariffConfig(name="", currency="EUR", import_price_t1=0.32, import_price_t2=0.26,
                             export_price_t1=0.04, export_price_t2=0.04, fixed_per_year=120.0, fixed_per_month=5.5,
                             fixed_per_day=0.1, capacity_price=53.0, capacity_floor_kw=2.5, gas_price=1.10)
    assert t.priced and t.section == "tariff"


def test_defaults_price_nothing() -> None:
    cfg = config.loads("")
    assert cfg.tariff == TariffConfig() and not cfg.tariff.priced and cfg.tariffs == ()
    assert cfg.tariff.capacity_floor_kw == 2.5


def test_fixed_fees_may_be_negative() -> None:
    assert config.loads("[tariff]\nfixed_per_year = -524.0\n").tariff.fixed_per_year == -524.0  # NL tax refund


def test_single_import_price_sets_both_registers() -> None:
    t = config.loads("[tariff]\nimport_price = 0.30\n").tariff
    assert (t.import_price_t1, t.import_price_t2) == (0.30, 0.30)


@pytest.mark.parametrize(("both", "one"), [("import_price", "import_price_t1"), ("import_price", "import_price_t2"),
                                           ("export_price", "export_price_t2")])
def test_a_price_given_both_ways_is_an_error(both: str, one: str) -> None:
    with pytest.raises(ConfigError, match=rf"^\[tariff:x\] {both} = '0.3': sets both .* \({one} = 0.2\)"):
        config.loads(f"[tariff:x]\n{both} = 0.3\n{one} = 0.2\n")


def test_named_tariffs_for_comparison() -> None:
    cfg = config.loads("[tariff:fixed]\nimport_price = 0.3\n[tariff:day-night]\nimport_price_t1 = 0.35\n"
                       "import_price_t2 = 0.25\n")
    assert [t.name for t in cfg.tariffs] == ["fixed", "day-night"]
    assert cfg.tariffs[1].section == "tariff:day-night"
    assert config.redacted(cfg)["tariff:fixed"]["import_price_t1"] == 0.3


def test_named_tariffs_must_be_unique() -> None:
    with pytest.raises(ConfigError, match=r"^\[tariff:Fixed\]: a tariff named 'fixed' is already defined"):
        config.loads("[tariff:fixed]\nimport_price = 0.3\n[tariff:Fixed]\nimport_price = 0.2\n")
    with pytest.raises(ConfigError, match="may only hold letters"):
        config.loads("[tariff:my tariff]\nimport_price = 0.3\n")


def test_compared_tariffs_share_one_currency() -> None:
    with pytest.raises(ConfigError, match=r"^\[tariff:se\] currency = 'SEK': differs from \[tariff\] currency = 'EUR'"):
        config.loads("[tariff]\nimport_price = 0.3\n[tariff:se]\ncurrency = SEK\nimport_price = 2\n")
    with pytest.raises(ConfigError, match=r"^\[tariff:b\] currency = 'EUR': differs from \[tariff:a\]"):
        config.loads("[tariff:a]\ncurrency = SEK\n[tariff:b]\nimport_price = 0.3\n")
    cfg = config.loads("[tariff:a]\ncurrency = SEK\n[tariff:b]\ncurrency = sek\n")  # no [tariff] prices: fine
    assert {t.currency for t in cfg.tariffs} == {"SEK"}


@pytest.mark.parametrize(("key", "value", "why"), [
    ("currency", "euro", "three-letter currency"),
    ("import_price_t1", "0,32", "expected a number"),
    ("export_price", "nan", "finite"),
    ("fixed_per_year", "ten", "expected a number"),
    ("capacity_price", "cheap", "expected a number"),
    ("capacity_price", "-1", "must not be negative"),
    ("capacity_floor", "2.5 kWh", "expected a power"),
    ("capacity_floor", "-1 kW", "must not be negative"),
    ("gas_price", "x", "expected a number"),
    ("colour", "blue", "unknown key"),
])
def test_bad_values_name_section_key_and_value(key: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.loads(f"[tariff]\n{key} = {value}\n")
    assert str(exc.value).startswith(f"[tariff] {key} = {value!r}: ") and why in str(exc.value)


def test_parse_kw() -> None:
    assert parse_kw("2.5 kW") == 2.5 and parse_kw("2500 W") == 2.5 and parse_kw("3") == 3.0


def test_prices_file_is_loaded_at_config_load_in_the_meter_timezone(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("start;import EUR/kWh\n2025-06-01 00:00;0.2\n2025-06-01 01:00;0.3\n")
    cfg = config.loads(f"[meter]\ntimezone = Europe/Amsterdam\n[tariff:dynamic]\nprices_file = {path}\n")
    table = cfg.tariffs[0].prices
    assert table is not None and table.import_prices == (0.2, 0.3)
    from datetime import datetime
    assert table.starts[0] == int(datetime(2025, 6, 1, tzinfo=ZoneInfo("Europe/Amsterdam")).timestamp())
    uk = config.loads(f"[meter]\ntimezone = Europe/London\n[tariff]\nprices_file = {path}\n")
    assert uk.tariff.prices is not None and uk.tariff.prices.starts[0] == table.starts[0] + 3600
    assert str(path) in str(config.redacted(cfg)["tariff:dynamic"]["prices"])


def test_prices_file_error_names_section_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("2025-06-01 00:00;0.2\n2025-06-01 01:00;0.3\n2025-06-01 01:00;0.3\n")
    with pytest.raises(ConfigError) as exc:
        config.loads(f"[tariff]\nprices_file = {path}\n")
    assert str(exc.value) == (f"[tariff] prices_file = {str(path)!r}: {path} line 3: duplicate slot "
                              "2025-06-01T01:00+02:00, also on line 2")
    with pytest.raises(ConfigError, match="prices in USD/kWh, \\[tariff\\] currency is EUR"):
        path.write_text("start;USD/kWh\n2025-06-01 00:00;0.2\n")
        config.loads(f"[tariff:x]\nprices_file = {path}\n")
    with pytest.raises(ConfigError, match="file not found"):
        config.loads(f"[tariff]\nprices_file = {tmp_path / 'missing.csv'}\n")


def test_bad_prices_file_exits_2_before_anything_starts(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("2025-06-01 00:00;0.2\n2025-06-01 01:00;zero\n")
    ini = tmp_path / "my.ini"
    ini.write_text(f"[tariff]\nprices_file = {prices}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "-c", str(ini), "--check-config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"{prices} line 2: 'zero' is not a number" in proc.stderr
