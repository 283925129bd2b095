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

A profile is chosen with `[meter] profile = NAME` or automatically (`auto`) by the shape and
content of the list: the list id text, the push-setup OBIS, the logical device name (or system
title) prefix, the OBIS codes present (`requires`, `hints`), and for positional lists the length
and the kind of every element (`Row.expect`). Scaler profiles that fit the same list are then
checked against P ≈ U × I (app.protocols.dlms).
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
    expect: what the element must be for the layout to match: "int", "bool", "text" (printable
    octets), "octets", or "" (anything).
    """

    obis: str
    scaler: int = 0
    unit: str | None = None
    kind: str = "value"
    expect: str = ""


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
    hints: tuple[str, ...] = ()  # OBIS codes that speak for it; "!A B": none of A, B present
    dsmr: bool = False  # payload is a DSMR telegram (Luxembourg, Styria)

    def layout(self, length: int) -> tuple[Row, ...] | None:
        """The positional layout for a list of `length` elements, if any."""
        for rows in self.layouts:
            if len(rows) == length:
                return rows
        return None

    def match(self, items: tuple[object, ...]) -> tuple[Row, ...] | None:
        """The positional layout whose length and element kinds fit `items`, if any."""
        for rows in self.layouts:
            if len(rows) == len(items) and all(_fits(r.expect, x) for r, x in zip(rows, items, strict=True)):
                return rows
        return None

    def score(self, refs: frozenset[str] | set[str]) -> int:
        """How many of the profile's hints the OBIS codes of a list satisfy."""
        n = 0
        for hint in self.hints:
            if hint.startswith("!"):
                n += all(ref not in refs for ref in hint[1:].split())
            else:
                n += hint in refs
        return n

    def scaler_for(self, cde: str) -> int | None:
        """The table scaler for OBIS C.D.E, or None."""
        for s in self.scalers:
            if s.cde == cde:
                return s.scaler
        return None


def _fits(expect: str, x: object) -> bool:
    """True when element `x` is of the kind a Row expects."""
    if not expect:
        return True
    if expect == "int":
        return type(x) is int
    if expect == "bool":
        return type(x) is bool
    if expect == "text":
        return type(x) is str or (type(x) is bytes and bool(x) and all(0x20 <= b < 0x7F for b in x))
    if expect == "octets":
        return type(x) is bytes
    raise ValueError(f"unknown Row.expect {expect!r}")


def kind_of(x: object) -> str:
    """A short name for what a body element is, for messages about a list's shape."""
    if type(x) is bool:
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if type(x) is bytes:
        return "text" if _fits("text", x) else f"octets[{len(x)}]"
    if type(x) is str:
        return "text"
    if isinstance(x, tuple):
        return f"structure[{len(x)}]"
    return "null" if x is None else type(x).__name__.lower()


def shape(items: tuple[object, ...]) -> str:
    """`18 values: text×2, int×16`: a list's length and element kinds, runs folded."""
    runs: list[list[object]] = []
    for x in items:
        k = kind_of(x)
        if runs and runs[-1][0] == k:
            runs[-1][1] = int(runs[-1][1]) + 1  # type: ignore[call-overload]
        else:
            runs.append([k, 1])
    kinds = ", ".join(f"{k}×{n}" if n != 1 else str(k) for k, n in runs)
    return f"{len(items)} value{'s' if len(items) != 1 else ''}: {kinds}" if items else "0 values"


def _v(obis: str, scaler: int = 0, unit: str | None = None, expect: str = "") -> Row:
    return Row(obis, scaler, unit, expect=expect)


def _n(obis: str, scaler: int = 0, unit: str | None = None) -> Row:
    """A positional number (an integer element)."""
    return Row(obis, scaler, unit, expect="int")


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

# Slovenian AM550 (Elektro Ljubljana, Elektro Celje): positional, no OBIS codes, voltages in 0.1 V and
# currents in 0.01 A as long-unsigned, powers/energies as double-long-unsigned (amsreader-firmware
# issues #615, #956; its decoder's Iskra case).
_SI_U = tuple(_n(f"1-0:{c}", -1, "V") for c in _VOLTAGE)
_SI_I = tuple(_n(f"1-0:{c}", -2, "A") for c in _CURRENT)
_SI_LJUBLJANA_18 = (
    Row("0-0:42.0.0", expect="text"), Row("0-0:96.1.3", expect="text"),
    _n("1-0:1.7.0", 0, "W"), _n("1-0:2.7.0", 0, "W"), _n("1-0:3.7.0", 0, "var"), _n("1-0:4.7.0", 0, "var"),
    *_SI_U, *_SI_I,
    *(_n(f"1-0:{c}.7.0", 0, "W") for c in (21, 41, 61, 22, 42, 62)),
)
_SI_LJUBLJANA_12 = (
    Row("0-0:42.0.0", expect="text"), Row("0-0:96.1.3", expect="text"),
    Row("0-0:96.3.10"), Row("0-0:96.14.0", expect="octets"),  # disconnect state (enum), tariff
    *(_n(f"1-0:{c}", 0, "Wh") for c in ("1.8.0", "1.8.1", "1.8.2", "2.8.0", "2.8.1", "2.8.2")),
    _n("1-0:3.8.0", 0, "varh"), _n("1-0:4.8.0", 0, "varh"),
)
_SI_CELJE_12 = (
    Row("0-0:42.0.0", expect="text"), Row("0-0:96.1.2", expect="text"),
    *_SI_U, *_SI_I,
    _n("1-0:1.7.0", 0, "W"), _n("1-0:2.7.0", 0, "W"), _n("1-0:3.7.0", 0, "var"), _n("1-0:4.7.0", 0, "var"),
)
# Netz Burgenland's L+G E450: positional, encrypted (system title LGZ...): U in V, I in 0.01 A, P in W,
# energies in Wh, the meter number last; the 14-value list adds three long-unsigned values that no
# public description names (kept out). amsreader-firmware issue #501 (14), Tasmota issue #23027 (11).
_BGLD_HEAD = (
    *(_n(f"1-0:{c}", 0, "V") for c in _VOLTAGE), *(_n(f"1-0:{c}", -2, "A") for c in _CURRENT),
    _n("1-0:1.7.0", 0, "W"), _n("1-0:2.7.0", 0, "W"), _n("1-0:1.8.0", 0, "Wh"), _n("1-0:2.8.0", 0, "Wh"),
)
_BGLD_UNNAMED = tuple(Row(f"1-0:0.0.{n}", kind="skip", expect="int") for n in (1, 2, 3))

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
        "iskra_si_ljubljana", "Iskraemeco AM550 (Slovenia: 18-value 1 s list, 12-value 15 min energy list)",
        "Elektro Ljubljana",
        layouts=(_SI_LJUBLJANA_18, _SI_LJUBLJANA_12),
        device_prefix="ISK",
    ),
    Profile(
        "iskra_si_celje", "Iskraemeco AM550 (Slovenia: 12-value list with voltages and currents)",
        "Elektro Celje",
        layouts=(_SI_CELJE_12,),
        device_prefix="ISK",
    ),
    Profile(
        "lg_e450_burgenland", "Landis+Gyr E450 (encrypted positional 11/14-value list)",
        "Netz Burgenland",
        layouts=(
            (*_BGLD_HEAD, Row("0-0:96.1.0", expect="text")),
            (*_BGLD_HEAD, *_BGLD_UNNAMED, Row("0-0:96.1.0", expect="text")),
        ),
        device_prefix="LGZ",
    ),
    Profile(
        "kamstrup", "Kamstrup OMNIPOWER (HAN list 1/2, Norway/Sweden/Denmark)",
        "Norwegian/Swedish/Danish operators with Kamstrup meters",
        scalers=tuple(Scaler(c, -2) for c in _CURRENT)
        + tuple(Scaler(f"{c}.8.0", 1) for c in (1, 2, 3, 4)),
        list_id="Kamstrup_V0001",
    ),
    Profile(
        "lg_e450", "Landis+Gyr E450 (push-object-list first; currents in 0.01 A)",
        "EKZ, AEW, CKW, Regionalwerke Baden and other Swiss operators; Energienetze Steiermark (AT)",
        scalers=(*tuple(Scaler(c, -2) for c in _CURRENT), Scaler("13.7.0", -3)),
        push_setup="0-8:25.9.0",
        device_prefix="LGZ",
        hints=("0-0:96.1.1", "0-0:96.1.0", "0-0:1.0.0"),  # E450 lists carry a meter number and the clock
    ),
    Profile(
        "lg_e570", "Landis+Gyr E570 (push-object-list first, full and VSE-2026 lists; currents in A)",
        "Swiss operators (VSE configuration)",
        scalers=(Scaler("13.7.0", -3),),
        push_setup="0-8:25.9.0",
        device_prefix="LGZ",
        hints=("1-1:5.8.0", "!0-0:96.1.0 0-0:96.1.1"),  # quadrant energies; no meter number
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
        push_setup="0-6:25.9.0",
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
