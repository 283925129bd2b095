"""[meter:NAME], [site] and the [meter] meter's name: what loads, and the errors that name the key."""

from __future__ import annotations

import pytest

from app import config as config_mod
from app.errors import ConfigError

BASE = "[meter]\nsource = /dev/null\n"


def load(text: str) -> config_mod.Config:
    return config_mod.loads(BASE + text)


def test_a_modbus_meter_with_roles_site_and_defaults() -> None:
    cfg = load("""
[site]
grid_capacity = 9.2 kW
[meter:pv]
role = solar
location = garage
protocol = modbus
source = rtu:///dev/ttyUSB1?baudrate=19200&parity=E&stopbits=1
unit_id = 3
preset = sdm630
poll_interval = 2 s
[meter:heatpump]
protocol = modbus
source = rtu+tcp://10.0.0.9:4196
preset = em24
""")
    assert cfg.site.grid_capacity_w == 9200.0
    pv, hp = cfg.meters
    assert (pv.name, pv.role, pv.location, pv.poll_interval, pv.offline_after) == ("pv", "solar", "garage", 2.0, 6.0)
    s = pv.settings
    assert (s.transport, s.device, s.baudrate, s.parity, s.unit_id) == ("rtu", "/dev/ttyUSB1", 19200, "E", 3)
    assert (hp.role, hp.settings.transport, hp.settings.host, hp.settings.port) == ("building", "rtu+tcp",
                                                                                     "10.0.0.9", 4196)
    assert cfg.meter.name == "grid" and cfg.meter.role == "grid"
    assert "meter:pv" in config_mod.redacted(cfg)


@pytest.mark.parametrize(("text", "message"), [
    ("[meter:pv]\nprotocol = modbus\npreset = sdm630\n", r"\[meter:pv\] source: missing"),
    ("[meter:pv]\nprotocol = carrier_pigeon\n", r"\[meter:pv\] protocol = 'carrier_pigeon': expected one of"),
    ("[meter:pv]\nsource = tcp://h\npreset = sdm630\n", r"\[meter:pv\] protocol: missing"),
    ("[meter:PV]\nprotocol = modbus\n", r"meter name 'PV' must start with a lower-case letter"),
    ("[meter:solar]\nprotocol = modbus\n", r"'solar' is taken by a quantity"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\npreset = sdm999\n", r"\[meter:pv\] preset = 'sdm999'"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\n", r"\[meter:pv\] preset: missing"),
    ("[meter:pv]\nprotocol = modbus\nsource = udp://h\npreset = sdm630\n", r"\[meter:pv\] source = 'udp://h'"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\nregister_power = 70000\n", r"register_power = '70000'"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\nregister_power = 1\nregister_power_type = int8\n",
     r"register_power_type = 'int8': expected one of"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\nregister_power_scale = 2\n",
     r"register_power_scale: needs register_power"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\npreset = sdm630\nrole = roof\n", r"\[meter:pv\] role = 'roof'"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\npreset = sdm630\npoll = 5\n",
     r"\[meter:pv\] poll = '5': unknown key"),
    ("[meter:grid]\nprotocol = modbus\nsource = tcp://h\npreset = sdm630\n", r"already \[meter\]'s"),
    ("[site]\ngrid_capacity = 9,2 kW\n", r"\[site\] grid_capacity = '9,2 kW': decimal comma"),
    ("[meter:pv]\nprotocol = modbus\nsource = tcp://h\npreset = sdm630\ntimeout = 5 s\n",
     r"\[meter:pv\] timeout = '5 s'"),
    ("[relay:r]\npin = GPIO17\non_when = pv.power < -100 W\n", r"no meter named 'pv'"),
    ("[relay:r]\npin = GPIO17\non_when = available > 1 kW\n", r"'available' needs \[site\] grid_capacity"),
])
def test_bad_meter_config_names_section_key_and_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(text)


def test_conditions_on_meters_and_sums_load() -> None:
    cfg = load("""
[site]
grid_capacity = 9200 W
[meter:pv]
role = solar
protocol = modbus
source = tcp://127.0.0.1
preset = sdm630
[relay:boiler]
pin = GPIO17
on_when = available > 3 kW for 60 s
off_when = mean(pv.power, 1 min) > -200 W
""")
    assert cfg.relays[0].on_when is not None and cfg.relays[0].on_when.quantity == "available"
