"""Push-list profiles as data: which OBIS code, scaler and unit each pushed value has, per meter model.

Three kinds of push bodies exist in the field:

- self-describing: OBIS octet-string next to each value, often with a {scaler, unit} structure
  (Kaifa MA309 at Netz NÖ/TINETZ, Aidon, L+G E350 Norway, Kamstrup) -> no table needed, except
  scalers for lists that leave them out (Kamstrup);
- push-object-list first: the body opens with the capture-object list (class, OBIS, attribute),
  values follow without scalers (L+G E450/E570/E360, Iskraemeco AM550 in Switzerland) -> a
  scaler table by OBIS;
- positional: values only (Kaifa Norway lists, Siemens IM350/Iskraemeco AM550 in Austria) ->
  a layout per list length: position -> OBIS, scaler, unit.

A profile is chosen with `[meter] profile = NAME` or automatically (`auto`) by the shape of the
list: the list id text, the push-setup OBIS, the logical device name prefix, the list length.
"""

from __future__ import annotations

from dataclasses import dataclass

# Unit of a value whose frame carries none, by OBIS C.D (electricity, A = 1).
DEFAULT_UNITS: dict[tuple[int, int], str] = {
    **{(c, 8): "Wh" for c in (1, 2, 15, 16, 21, 22, 41, 42, 61, 62)},
    **{(c, 8): "varh" for c in (3, 4, 5, 6, 7, 8, 23, 24, 43, 44, 63, 64)},
    **{(c, 7): "W" for c in (1, 2, 15, 16, 21, 22, 41, 42, 61, 62)},
    **{(c, 7): "var" for c in (3, 4, 5, 6, 7, 8, 23, 24, 43, 44, 63, 64)},
    **{(c, 7): "VA" for c in (9, 10, 29, 30, 49, 50, 69, 70)},
    **{(c, 7): "V" for c in (12, 32, 52, 72)},
    **{(c, 7): "A" for c in (11, 31, 51, 71, 91)},
    (14, 7): "Hz",
    **{(c, 4): "W" for c in (1, 2)},
    **{(c, 6): "W" for c in (1, 2)},
}

# DLMS unit enumeration (Blue Book, class Register attribute 3) -> unit text.
UNITS: dict[int, str | None] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency",
    11: "m", 12: "m/s", 13: "m3", 14: "m3", 15: "m3/h", 16: "m3/h", 17: "m3/d", 18: "m3/d", 19: "l",
    20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var",
    30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ohm",
    39: "Ohm m2/m", 40: "Wb", 41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)",
    47: "1/(VAh)", 48: "V2h", 49: "A2h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V2h)", 54: "1/(A2h)",
    55: "1/m3", 56: "%", 57: "Ah", 60: "Wh/m3", 61: "J/m3", 62: "mol%", 63: "g/m3", 64: "Pa s",
    65: "J/kg", 70: "dBm", 71: "dBuV", 72: "dB", 253: None, 254: None, 255: None,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One position of a positional list.

    kind: "value" (number or text), "ln" (an OBIS code sent as value), "time"/"date" (halves of a
    date-time to be joined under `obis`), "datetime" (a 12-byte date-time), "skip" (not kept).
    """

    obis: str
    scaler: int = 0
    unit: str | None = None
    kind: str = "value"


@dataclass(frozen=True, slots=True)
class Scaler:
    """Scaler (value * 10**scaler) for values whose OBIS C.D.E is `cde` (electricity, any A-B)."""

    cde: str
    scaler: int


@dataclass(frozen=True, slots=True)
class Profile:
    """A push-list profile: where it applies, how to recognise it, and its tables."""

    name: str
    meters: str
    operators: str
    layouts: tuple[tuple[Row, ...], ...] = ()  # positional lists, one per list length
    scalers: tuple[Scaler, ...] = ()  # for OBIS-labelled values without a scaler in the frame
    list_id: str | None = None  # first element's text (Kaifa "KFM_001", Kamstrup "Kamstrup_V0001")
    push_setup: str | None = None  # OBIS of the push setup named in the body (0-6:25.9.0, ...)
    device_prefix: str | None = None  # logical device name 0-0:42.0.0 / system title prefix
    requires: tuple[str, ...] = ()  # OBIS codes the list must contain
    dsmr: bool = False  # payload is a DSMR telegram (Luxembourg, Styria)

    def layout(self, length: int) -> tuple[Row, ...] | None:
        """The positional layout for a list of `length` elements, if any."""
        for rows in self.layouts:
            if len(rows) == length:
                return rows
        return None

    def scaler_for(self, cde: str) -> int | None:
        """The table scaler for OBIS C.D.E, or None."""
        for s in self.scalers:
            if s.cde == cde:
                return s.scaler
        return None


def _v(obis: str, scaler: int = 0, unit: str | None = None) -> Row:
    return Row(obis, scaler, unit)


_ENERGIES = (_v("1-0:1.8.0", 0, "Wh"), _v("1-0:2.8.0", 0, "Wh"), _v("1-0:3.8.0", 0, "varh"),
             _v("1-0:4.8.0", 0, "varh"))
_KAIFA_NO_HEAD = (
    Row("1-1:0.2.129"), Row("0-0:96.1.0"), Row("0-0:96.1.7"),
    _v("1-0:1.7.0", 0, "W"), _v("1-0:2.7.0", 0, "W"), _v("1-0:3.7.0", 0, "var"), _v("1-0:4.7.0", 0, "var"),
)
_KAIFA_NO_3P = (
    _v("1-0:31.7.0", -3, "A"), _v("1-0:51.7.0", -3, "A"), _v("1-0:71.7.0", -3, "A"),
    _v("1-0:32.7.0", -1, "V"), _v("1-0:52.7.0", -1, "V"), _v("1-0:72.7.0", -1, "V"),
)
_KAIFA_NO_1P = (_v("1-0:31.7.0", -3, "A"), _v("1-0:32.7.0", -1, "V"))
_KAIFA_NO_HOURLY = (
    Row("0-0:1.0.0", kind="datetime"),
    *_ENERGIES,
)
_AT_IM350_HEAD = (
    Row("0-6:25.9.0", kind="ln"), Row("0-0:96.1.0"),
    Row("0-0:1.0.0", kind="time"), Row("0-0:1.0.0", kind="date"),
    *_ENERGIES,
    _v("1-0:1.7.0", 0, "W"), _v("1-0:2.7.0", 0, "W"),
)
_CURRENT = ("31.7.0", "51.7.0", "71.7.0")
_VOLTAGE = ("32.7.0", "52.7.0", "72.7.0")

PROFILES: tuple[Profile, ...] = (
    Profile(
        "kaifa_no", "Kaifa MA304H3E, MA304H4, MA304T3/T4, MA105H2E (Norway HAN, NVE list 1/2/3)",
        "Norwegian grid operators using Kaifa (Hafslund/Elvia, Skagerak, ...)",
        layouts=(
            (_v("1-0:1.7.0", 0, "W"),),
            _KAIFA_NO_HEAD + _KAIFA_NO_3P,
            _KAIFA_NO_HEAD + _KAIFA_NO_3P + _KAIFA_NO_HOURLY,
            _KAIFA_NO_HEAD + _KAIFA_NO_1P,
            _KAIFA_NO_HEAD + _KAIFA_NO_1P + _KAIFA_NO_HOURLY,
        ),
        list_id="KFM_001",
    ),
    Profile(
        "at_im350", "Siemens IM350, Iskraemeco AM550 (Austrian 10/12-value push)",
        "Kärnten Netz, eww Wels, other Austrian operators with this list",
        layouts=(
            _AT_IM350_HEAD,
            (*_AT_IM350_HEAD, Row("0-0:96.13.0", kind="skip"), Row("0-0:96.13.1", kind="skip")),
        ),
        push_setup="0-6:25.9.0",
    ),
    Profile(
        "kamstrup", "Kamstrup OMNIPOWER (HAN list 1/2, Norway/Sweden/Denmark)",
        "Norwegian/Swedish/Danish operators with Kamstrup meters",
        scalers=tuple(Scaler(c, -2) for c in _CURRENT)
        + tuple(Scaler(f"{c}.8.0", 1) for c in (1, 2, 3, 4)),
        list_id="Kamstrup_V0001",
    ),
    Profile(
        "lg_e570", "Landis+Gyr E570 (push-object-list first)",
        "Swiss operators (VSE configuration)",
        scalers=(Scaler("13.7.0", -3),),
        device_prefix="LGZ",
        requires=("1-1:5.8.0",),
    ),
    Profile(
        "lg_e450", "Landis+Gyr E450 (push-object-list first, VSE-2026 configuration)",
        "EKZ, AEW, CKW and other Swiss operators; Energienetze Steiermark (AT)",
        scalers=(*tuple(Scaler(c, -2) for c in _CURRENT), Scaler("13.7.0", -3)),
        push_setup="0-8:25.9.0",
        device_prefix="LGZ",
    ),
    Profile(
        "lg_e360", "Landis+Gyr E360 (push-object-list first)",
        "Swiss operators (VSE configuration)",
        scalers=tuple(Scaler(c, -1) for c in _VOLTAGE) + tuple(Scaler(c, -2) for c in _CURRENT),
        push_setup="0-6:25.9.0",
        device_prefix="LGZ",
    ),
    Profile(
        "iskra_am550", "Iskraemeco AM550 (push-object-list first, Switzerland)",
        "EKZ and other Swiss operators (VSE configuration)",
        scalers=tuple(Scaler(c, -1) for c in _VOLTAGE) + tuple(Scaler(c, -2) for c in _CURRENT)
        + (Scaler("13.7.0", -3),),
        device_prefix="ISK",
    ),
    Profile(
        "self_describing", "Kaifa MA309 (AT), Aidon 6000 series, L+G E350 (NO), any OBIS+scaler list",
        "Netz NÖ, TINETZ, Wiener Netze, Energie Steiermark; Swedish/Norwegian Aidon and Landis+Gyr",
    ),
    Profile(
        "smarty", "Sagemcom T210-D (Luxembourg Smarty, encrypted DSMR P1)",
        "Creos, Sudstroum, Electris (Luxembourg); authentication key fixed by the Lux P1 spec",
        dsmr=True,
    ),
    Profile(
        "at_dsmr", "Sagemcom T210-D (Energienetze Steiermark, encrypted DSMR text in a raw APDU)",
        "Energienetze Steiermark",
        dsmr=True,
    ),
)

BY_NAME: dict[str, Profile] = {p.name: p for p in PROFILES}
PROFILE_NAMES: tuple[str, ...] = ("auto", *BY_NAME)
GENERIC = BY_NAME["self_describing"]


def get(name: str) -> Profile | None:
    """The profile called `name`; None for "auto"; KeyError for an unknown name."""
    if name == "auto":
        return None
    return BY_NAME[name]
