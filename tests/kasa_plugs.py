"""Tapo/Kasa plug answers shaped like python-kasa's device fixtures (same methods, keys and units), with our own
values: the fixtures themselves are not copied into this repository (fetched data stays outside it).

P115: energy_monitoring v2 and auto_off v2, switched on. P110: the same firmware family, switched off, as a relay.
P100: a plug with neither energy monitoring nor auto_off (python-kasa's P100(US) 1.4.0 component list)."""

from __future__ import annotations

import copy
from typing import Any

COMPONENTS = ["device", "firmware", "quick_setup", "time", "wireless", "schedule", "countdown", "antitheft",
              "account", "synchronize", "sunrise_sunset", "led", "cloud_connect", "iot_cloud", "device_local_time",
              "default_states", "auto_off", "energy_monitoring", "power_protection"]
P115: dict[str, Any] = {
    "component_nego": {"component_list": [{"id": c, "ver_code": 2 if c in ("device", "firmware", "schedule",
                                                                              "countdown", "auto_off",
                                                                              "energy_monitoring") else 1}
                                          for c in COMPONENTS]},
    "get_device_info": {"device_id": "0" * 40, "device_on": True, "fw_ver": "1.2.3 Build 230425 Rel.142542",
                        "hw_ver": "1.0", "ip": "127.0.0.1", "mac": "A8-42-A1-00-00-01", "model": "P115",
                        "nickname": "ZGlzaHdhc2hlcg==", "on_time": 1200, "overheated": False, "region": "UTC",
                        "rssi": -50, "signal_level": 3, "ssid": "aG9tZQ==", "time_diff": 0,
                        "type": "SMART.TAPOPLUG", "auto_off_status": "off", "auto_off_remain_time": 0,
                        "default_states": {"state": {}, "type": "last_states"}, "lang": "", "latitude": 0,
                        "longitude": 0, "oem_id": "0" * 32, "hw_id": "0" * 32, "fw_id": "0" * 32,
                        "has_set_location_info": False, "avatar": "", "specs": "",
                        "power_protection_status": "normal"},
    "get_device_time": {"region": "UTC", "time_diff": 0, "timestamp": 1767225600},
    "get_device_usage": {"power_usage": {"past30": 12, "past7": 5, "today": 1},
                         "saved_power": {"past30": 0, "past7": 0, "today": 0},
                         "time_usage": {"past30": 600, "past7": 200, "today": 30}},
    "get_current_power": {"current_power": 1843},
    # firmware with energy_monitoring v2 also answers these (python-kasa asks for them and prefers power_mw)
    "get_emeter_data": {"power_mw": 1843250, "voltage_mv": 231500, "current_ma": 7962, "energy_wh": 678},
    "get_emeter_vgain_igain": {"v_gain": 118295, "i_gain": 11840},
    "get_energy_usage": {"current_power": 1843250, "electricity_charge": [0, 0, 0],
                         "local_time": "2026-01-01 12:00:00", "month_energy": 12345, "month_runtime": 600,
                         "today_energy": 678, "today_runtime": 30},
    "get_auto_off_config": {"delay_min": 120, "enable": False},
    "get_auto_update_info": {"enable": True, "random_range": 120, "time": 180},
    "get_connect_cloud_state": {"status": 0},
    "get_countdown_rules": {"countdown_rule_max_count": 1, "enable": False, "rule_list": []},
    "get_antitheft_rules": {"antitheft_rule_max_count": 1, "enable": False, "rule_list": []},
    "get_schedule_rules": {"enable": False, "rule_list": [], "schedule_rule_max_count": 32, "start_index": 0,
                           "sum": 0},
    "get_next_event": {},
    "get_latest_fw": {"fw_size": 0, "fw_ver": "1.2.3", "hw_id": "", "need_to_upgrade": False, "oem_id": "",
                      "release_date": "", "release_note": "", "type": 0},
    "get_fw_download_state": {"auto_upgrade": False, "download_progress": 0, "reboot_time": 5, "status": 0,
                              "upgrade_time": 5},
    "get_led_info": {"led_rule": "always", "led_status": True,
                     "night_mode": {"end_time": 420, "night_mode_type": "sunrise_sunset", "start_time": 1140,
                                    "sunrise_offset": 0, "sunset_offset": 0}},
    "get_max_power": {"max_power": 3895},
    "get_protection_power": {"enabled": False, "protection_power": 0},
    "get_electricity_price_config": {"constant_price": 0, "time_of_use_config": {}, "type": "constant"},
}



P110: dict[str, Any] = copy.deepcopy(P115)
P110["get_device_info"] |= {"model": "P110", "device_on": False, "on_time": 0, "nickname": "Ym9pbGVy"}
P110["get_current_power"] = {"current_power": 0}
P110["get_emeter_data"] = {"power_mw": 0, "voltage_mv": 231000, "current_ma": 0, "energy_wh": 210}

P100_COMPONENTS = ["device", "firmware", "quick_setup", "time", "wireless", "schedule", "countdown", "antitheft",
                   "account", "synchronize", "sunrise_sunset", "led", "cloud_connect", "iot_cloud", "default_states"]
P100: dict[str, Any] = {
    "component_nego": {"component_list": [{"id": c, "ver_code": 2 if c in ("device", "schedule", "countdown")
                                           else 3 if c == "quick_setup" else 1} for c in P100_COMPONENTS]},
    "get_device_info": {k: v for k, v in P115["get_device_info"].items()
                        if k not in ("auto_off_status", "auto_off_remain_time", "power_protection_status")}
    | {"model": "P100", "device_on": False, "on_time": 0, "fw_ver": "1.4.0 Build 20231017 Rel. 33876",
       "hw_ver": "1.0.0", "specs": "US", "location": ""},
}
for _method in ("get_device_time", "get_device_usage", "get_antitheft_rules", "get_connect_cloud_state",
                "get_countdown_rules", "get_fw_download_state", "get_latest_fw", "get_led_info", "get_next_event",
                "get_schedule_rules"):
    P100[_method] = copy.deepcopy(P115[_method])
