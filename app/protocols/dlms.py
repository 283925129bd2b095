"""DLMS/COSEM push decoder: an APDU frame -> the same `Reading` as a DSMR telegram.

    [DB|DC general-glo/ded-ciphering -> decrypted APDU]                      (app.protocols.security)
    0F  long-invoke-id-and-priority(4)  date-time(00 | 09 0C <12> | 0C <12>)  body (A-XDR Data)
    '/' ... '!CRC'  (a decrypted DSMR telegram: Luxembourg Smarty, Styrian T210-D)

The body is read three ways (see app.protocols.cosem_profiles): OBIS codes paired with values
(with or without {scaler, unit}), a push-object-list followed by the values, or a positional
list described by a profile. Values are scaled, kept in the meter's units under normalized
OBIS keys, and the named fields come from app.obis.named_fields (W -> kW, Wh -> kWh).
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from app.errors import ConfigError, DecryptionError, ParseError
from app.framing import Frame
from app.logutil import RateLimited
from app.obis import from_bytes, named_fields
from app.protocols import axdr, cosem_profiles, security
from app.protocols.axdr import Array, BitString, DateTime, Structure
from app.protocols.cosem_profiles import DEFAULT_UNITS, UNITS, Profile, Row, shape
from app.protocols.dsmr import parse_telegram
from app.records import Reading, Value, fixed_offset

log = logging.getLogger(__name__)

DATA_NOTIFICATION = 0x0F
_METER_ID_SUFFIXES = (":96.1.0", ":96.1.1")
_NO_DEVIATION = b"\x80\x00\xff"
MAX_SHAPES = 256  # push-list shapes whose profile choice is remembered (and announced)

# One labelled body element: OBIS bytes, raw value, frame scaler/unit (or None), profile row.
_Entry = tuple[bytes, object, "tuple[int, str | None] | None", "Row | None"]


def _is_ln(x: object) -> bool:
    """True for a 6-byte octet-string that looks like an OBIS logical name."""
    return type(x) is bytes and len(x) == 6 and x[0] <= 0x10 and (x[5] == 0xFF or x[5] <= 100)


def _scaler_unit(x: object) -> tuple[int, str | None] | None:
    """(scaler, unit) from a {integer scaler, enum unit} structure, else None."""
    if type(x) is Structure and len(x) == 2:
        s, u = x
        if isinstance(s, int) and isinstance(u, int) and not isinstance(s, bool) and -128 <= s <= 127:
            return s, UNITS.get(u)
    return None


def _text(raw: bytes) -> str | None:
    """`raw` as text when it is printable ASCII (trailing NULs allowed), else None."""
    if all(0x20 <= b < 0x7F for b in raw.rstrip(b"\x00")):
        return raw.decode("ascii")
    return None


class DlmsDecoder:
    """Decoder for DLMS push APDUs (Frame.kind == "apdu"); DSMR frames are passed to the DSMR parser."""

    def __init__(
        self,
        key: bytes | None = None,
        auth_key: bytes | None = None,
        profile: str = "auto",
        tz: tzinfo | None = None,
    ) -> None:
        if profile not in cosem_profiles.PROFILE_NAMES:
            raise ConfigError(
                f"[meter] profile = {profile!r}: unknown (known: {', '.join(cosem_profiles.PROFILE_NAMES)})",
                "meter", "profile",
            )
        self.key = key
        self.auth_key = auth_key
        self.profile = cosem_profiles.get(profile)
        self.tz: tzinfo = tz if tz is not None else ZoneInfo("UTC")
        self._warned_unauthenticated = False
        # auto: the profile decided per list shape (and meter), and what was last said about it
        self._chosen: dict[tuple[object, ...], Profile] = {}
        self._announced: dict[tuple[object, ...], str] = {}
        self._limited = RateLimited(log, 300.0)

    # ------------------------------------------------------------------ APDU level

    def decode(self, frame: Frame, received: datetime, seq: int = 0) -> Reading:
        """Decode one good frame; raise ChecksumError, DecryptionError or ParseError."""
        if not frame.ok:
            raise ParseError(f"rejected frame: {frame.reason}")
        if frame.kind == "dsmr":
            return parse_telegram(frame.data, received, self.tz, seq, frame.crc_ok)  # type: ignore[arg-type]
        apdu = frame.data
        if not apdu:
            raise ParseError("empty APDU")
        system_title = None
        unverified = False
        verified = None
        if apdu[0] in security.CIPHERING_TAGS:
            plain = security.decrypt(apdu, self.key, self.auth_key)
            apdu, system_title = plain.data, plain.system_title
            verified = plain.verified
            unverified = not plain.verified
            if plain.has_tag and not plain.verified and not self._warned_unauthenticated:
                self._warned_unauthenticated = True
                log.info("frames carry a GCM tag but no auth key is set: decrypting without "
                         "authentication (set [meter] auth_key to verify them)")
        if not apdu:
            raise ParseError("empty APDU after decryption")
        if apdu[0] == 0x2F:  # '/': a DSMR telegram inside the ciphering
            return parse_telegram(apdu, received, self.tz, seq)  # type: ignore[arg-type]
        if apdu[0] != DATA_NOTIFICATION:
            if system_title is not None:
                raise DecryptionError(f"{security.WRONG_KEY} (plaintext starts with 0x{apdu[0]:02X})")
            raise ParseError(f"APDU tag 0x{apdu[0]:02X} is not a data-notification (0x0F)")
        try:
            apdu_time, body = self._notification(apdu, strict=unverified)
        except ParseError as exc:
            if unverified:
                raise DecryptionError(f"{security.WRONG_KEY} ({exc})") from None
            raise
        reading = self._reading(body, apdu_time, system_title, received, seq)
        if frame.link == "hdlc" or verified:  # an M-Bus 8-bit sum is no CRC
            return _with_crc(reading, True)
        return reading

    @staticmethod
    def _notification(apdu: bytes, strict: bool) -> tuple[DateTime | None, object]:
        """(date-time, body) of a data-notification APDU."""
        if len(apdu) < 6:
            raise ParseError(f"data-notification of {len(apdu)} bytes is cut off")
        marker = apdu[5]
        dt_raw: bytes | None
        if marker == 0x00:
            dt_raw, pos = None, 6
        elif marker == 0x09:
            n = apdu[6] if len(apdu) > 6 else -1
            if n == 0:
                dt_raw, pos = None, 7
            elif n == 12 and len(apdu) >= 19:
                dt_raw, pos = apdu[7:19], 19
            else:
                raise ParseError(f"data-notification date-time of length {n}, expected 12")
        elif marker == 0x0C and len(apdu) >= 18:
            dt_raw, pos = apdu[6:18], 18
        else:
            raise ParseError(f"data-notification date-time marker 0x{marker:02X} unknown")
        body, end = axdr.decode(apdu, pos)
        if strict and end != len(apdu):
            raise ParseError(f"{len(apdu) - end} bytes left after the notification body")
        return (axdr.parse_datetime(dt_raw) if dt_raw is not None else None), body

    # ------------------------------------------------------------------ body level

    def _reading(
        self, body: object, apdu_time: DateTime | None, system_title: bytes | None,
        received: datetime, seq: int,
    ) -> Reading:
        items: tuple[object, ...] = body if isinstance(body, tuple) else (body,)
        entries: list[_Entry] = []
        unlabelled: list[object] = []
        forced = self.profile if self.profile is not None and not self.profile.dsmr else None
        first = items[0] if items else None
        if type(first) is Array and first and all(_capture_def(c) for c in first):
            found = _push_list(items, entries, unlabelled, system_title)
            if forced is not None:
                profile: Profile | None = forced
                values = self._values(entries, forced)
            else:
                profile, values = self._auto_push_list(found, entries)
        else:
            profile = forced if forced is not None else _auto_positional(items, system_title)
            rows = profile.match(items) if profile is not None else None
            if profile is not None and profile.layouts and rows is None:
                raise ParseError(f"profile {profile.name} has no layout for a list of {shape(items)}")
            if rows is not None:
                for row, item in zip(rows, items, strict=True):
                    entries.append((b"", item, None, row))
            else:
                if profile is None:
                    profile = _auto_list_id(items)
                _walk(items, entries, unlabelled, 0)
            values = self._values(entries, profile)
            if forced is None and profile is not None and values:
                self._announce(("list", shape(items), system_title), profile,
                               f"{shape(items)}", "layout fits" if rows is not None else "OBIS codes in the list",
                               _power_check(values)[1])
        if not any(type(v.value) is int or type(v.value) is float for v in values.values()):
            what = f"profile {forced.name} does not fit" if forced is not None else "matches no profile"
            self._limited.warning(
                f"empty {shape(items)}",
                "DLMS push list %s (%s): no value in it can be placed, the reading is empty; set the "
                "meter's list with --profile / [meter] profile = NAME (known: %s), or report the list",
                what, shape(items), ", ".join(cosem_profiles.BY_NAME))
        meter_time = apdu_time.to_datetime(self.tz) if apdu_time is not None else None
        if meter_time is not None and meter_time.tzinfo is None:
            meter_time = meter_time.replace(tzinfo=self.tz)
        if meter_time is None:
            clock = values.get("0-0:1.0.0")
            meter_time = clock.timestamp if clock is not None else None
        if meter_time is not None:
            meter_time = fixed_offset(meter_time)
        fields, gas_time = named_fields(values)
        return Reading(
            seq=seq,
            protocol="dlms",
            meter_id=_meter_id(values, unlabelled, system_title),
            header=profile.name if profile is not None else cosem_profiles.GENERIC.name,
            meter_time=meter_time,
            received=received,
            values=values,
            fields=fields,
            gas_time=gas_time,
        )

    def _values(self, entries: list[_Entry], profile: Profile | None) -> dict[str, Value]:
        """Scaled, unit-tagged Values under normalized OBIS keys."""
        values: dict[str, Value] = {}
        halves: dict[str, dict[str, bytes]] = {}
        for ln, raw, su, row in entries:
            kind = "value"
            if row is not None:
                ref, kind = row.obis, row.kind
                if kind == "skip":
                    continue
                if kind in ("time", "date"):
                    if type(raw) is bytes:
                        halves.setdefault(ref, {})[kind] = raw
                    continue
            else:
                ref = from_bytes(ln)
            if type(raw) is int or type(raw) is float:
                values[ref] = self._number(ref, raw, su, row, profile)
            elif type(raw) is bytes:
                values[ref] = self._octets(raw, kind)
            elif type(raw) is str:
                values[ref] = Value(raw)
            elif type(raw) is DateTime:
                values[ref] = Value(raw.isoformat(), None, raw.to_datetime(self.tz))
            elif isinstance(raw, int):  # bool, Enum
                values[ref] = Value(int(raw))
            elif type(raw) is BitString:
                values[ref] = Value(str(raw))
            elif raw is None:
                values[ref] = Value(None)
        for ref, parts in halves.items():
            date, time = parts.get("date"), parts.get("time")
            if date is not None and time is not None and len(date) == 5 and len(time) == 4:
                dt = axdr.parse_datetime(date + time + _NO_DEVIATION)
                if dt is not None:
                    values[ref] = Value(dt.isoformat(), None, dt.to_datetime(self.tz))
        return values

    @staticmethod
    def _number(
        ref: str, raw: float, su: tuple[int, str | None] | None, row: Row | None, profile: Profile | None,
    ) -> Value:
        """A scaled number: frame scaler wins, then the profile row, then the profile's OBIS table."""
        cd = _cd(ref)
        if su is not None:
            scaler, unit = su
        elif row is not None:
            scaler, unit = row.scaler, row.unit
        else:
            scaler = 0
            if profile is not None and profile.scalers and cd is not None:
                found = profile.scaler_for(ref.split(":", 1)[1])
                scaler = found if found is not None else 0
            unit = DEFAULT_UNITS.get(cd) if cd is not None else None
        if scaler > 0:
            value: float = raw * 10**scaler
        elif scaler < 0:
            value = raw / 10**-scaler
        else:
            value = raw
        return Value(value, unit)

    def _octets(self, raw: bytes, kind: str) -> Value:
        """An octet-string: OBIS code, date-time, text or hex."""
        if kind == "ln" and len(raw) == 6:
            return Value(from_bytes(raw))
        if kind == "datetime" or len(raw) == 12:
            text = _text(raw) if kind != "datetime" else None
            if text is not None:
                return Value(text)
            dt = axdr.parse_datetime(raw)
            if dt is not None:
                return Value(dt.isoformat(), None, dt.to_datetime(self.tz))
        text = _text(raw)
        if text is not None:
            return Value(text)
        return Value(raw.hex().upper())


    # ------------------------------------------------------------------ auto profile

    def _auto_push_list(self, found: _PushList, entries: list[_Entry]) -> tuple[Profile, dict[str, Value]]:
        """The profile for a push-object-list (by its shape and content, checked by P ≈ U × I) and its values."""
        chosen = self._chosen.get(found.key)
        if chosen is not None:
            return chosen, self._values(entries, chosen)
        ranked = _rank(found)
        if not ranked:
            generic = cosem_profiles.GENERIC
            self._remember(found.key, generic)
            values = self._values(entries, generic)
            if any(su is None and row is None for _, _, su, row in entries):
                self._limited.warning(
                    f"nomatch {found.key!r}",
                    "DLMS push list (%s) matches no profile: values without a scaler in the frame are kept "
                    "as sent; if some look 10x/100x/1000x off, set --profile / [meter] profile = NAME "
                    "(known: %s)", found.describe(), ", ".join(cosem_profiles.BY_NAME))
            return generic, values
        rejected: list[str] = []
        tried: list[tuple[Profile, list[str], dict[str, Value], str, str]] = []
        for p, why in ranked:
            values = self._values(entries, p)
            verdict, detail = _power_check(values)
            tried.append((p, why, values, verdict, detail))
            if verdict != "bad":
                break
            rejected.append(f"not {p.name}: {detail}")
        pick = next((t for t in tried if t[3] != "bad"), tried[0])
        profile, why, values, verdict, detail = pick
        if verdict == "ok" or len(ranked) == 1 or len(tried) == len(ranked):
            self._remember(found.key, profile)  # decided: no alternative is left to check
        if verdict == "bad":
            self._limited.warning(
                f"check {found.key!r}",
                "DLMS push list (%s): no fitting profile passes the P ≈ U × I check (%s); using %s — "
                "if currents or voltages look off, set --profile / [meter] profile = NAME",
                found.describe(), "; ".join(rejected), profile.name)
        self._announce(found.key, profile, found.describe(), ", ".join(why) or "only fitting profile",
                       "; ".join([detail, *rejected[: len(rejected) if verdict != "bad" else 0]]))
        return profile, values

    def _remember(self, key: tuple[object, ...], profile: Profile) -> None:
        """Keep the profile decided for a list shape; bounded (a corrupt stream may show any number of shapes)."""
        if len(self._chosen) >= MAX_SHAPES and key not in self._chosen:
            self._chosen.clear()
        self._chosen[key] = profile

    def _announce(self, key: tuple[object, ...], profile: Profile, what: str, why: str, check: str) -> None:
        """Log at INFO which profile auto chose for a list shape, once (again only if the choice changes)."""
        if self._announced.get(key) == profile.name or len(self._announced) >= MAX_SHAPES:
            return
        self._announced[key] = profile.name
        log.info("DLMS push list (%s): profile %s (%s; %s)", what, profile.name, why, check)


# ---------------------------------------------------------------------- helpers


def _with_crc(reading: Reading, ok: bool) -> Reading:
    """The reading with crc_ok set (frozen dataclass with slots: rebuild it)."""
    return Reading(reading.seq, reading.protocol, reading.meter_id, reading.header, reading.meter_time,
                   reading.received, reading.values, reading.fields, reading.gas_time, ok)


def _cd(ref: str) -> tuple[int, int] | None:
    """(C, D) of an electricity OBIS reference (A = 1), else None."""
    if not ref.startswith("1-"):
        return None
    try:
        cde = ref.split(":", 1)[1].split("*", 1)[0].split(".")
        return int(cde[0]), int(cde[1])
    except (IndexError, ValueError):
        return None


def _capture_def(x: object) -> bool:
    """True for a push-object-list entry {class_id, logical_name, attribute_index, data_index}."""
    return (type(x) is Structure and len(x) == 4 and type(x[0]) is int and type(x[1]) is bytes
            and len(x[1]) == 6 and type(x[2]) is int)


class _PushList:
    """What a push-object-list says about its meter: OBIS codes, push setup, device name."""

    __slots__ = ("count", "device_text", "key", "refs", "setup_ref")

    def __init__(self, refs: frozenset[str], setup_ref: str | None, device_text: str,
                 key: tuple[object, ...], count: int) -> None:
        self.refs = refs
        self.setup_ref = setup_ref
        self.device_text = device_text
        self.key = key
        self.count = count

    def describe(self) -> str:
        """`17 objects, push setup 0-8:25.9.0, device LGZ1030653520967`."""
        device = self.device_text or "no device name"
        return f"{self.count} objects, push setup {self.setup_ref or 'none'}, device {device}"


def _push_list(
    items: tuple[object, ...], entries: list[_Entry], unlabelled: list[object], system_title: bytes | None,
) -> _PushList:
    """Label the values that follow a push-object-list; returns what the list says about the meter."""
    capture: Array = items[0]  # type: ignore[assignment]
    scaler_units: dict[bytes, tuple[int, str | None]] = {}
    labelled: list[tuple[bytes, object]] = []
    push_setup: bytes | None = None
    for k, cdef in enumerate(capture):
        if k >= len(items) or not isinstance(cdef, Structure):
            break
        cls, ln, attr = cdef[0], cdef[1], cdef[2]
        if type(ln) is not bytes:
            continue
        value = items[k]
        if cls == 40:
            push_setup = ln
            continue
        if attr == 3 and cls in (3, 4):
            su = _scaler_unit(value)
            if su is not None:
                scaler_units[ln] = su
            continue
        if attr == 2:
            labelled.append((ln, value))
        else:
            unlabelled.append(value)
    unlabelled.extend(items[len(capture):])
    for ln, value in labelled:
        entries.append((ln, value, scaler_units.get(ln), None))
    refs = frozenset(from_bytes(ln) for ln, _ in labelled)
    device = next((v for ln, v in labelled if ln == b"\x00\x00\x2a\x00\x00\xff"), None)
    device_text = device.decode("latin-1") if type(device) is bytes else device if type(device) is str else ""
    if not device_text and system_title is not None:
        device_text = system_title[:3].decode("latin-1")
    setup_ref = from_bytes(push_setup) if push_setup is not None else None
    key = (tuple(c[1] for c in capture if isinstance(c, Structure) and len(c) > 1), device_text, system_title)
    return _PushList(refs, setup_ref, device_text, key, len(capture))


def _rank(found: _PushList) -> list[tuple[Profile, list[str]]]:
    """The scaler profiles that fit a push-object-list, best first, each with why it fits."""
    ranked: list[tuple[int, int, Profile, list[str]]] = []
    for idx, p in enumerate(cosem_profiles.PROFILES):
        if not p.scalers or p.layouts or p.list_id is not None:
            continue
        why: list[str] = []
        if p.push_setup is not None:
            if p.push_setup != found.setup_ref:
                continue
            why.append(f"push setup {p.push_setup}")
        if p.device_prefix is not None:
            if found.device_text:
                if not found.device_text.startswith(p.device_prefix):
                    continue
                why.append(f"device {p.device_prefix}…")
            elif p.push_setup is not None:
                why.append("no device name to go by")
            else:
                continue
        if not all(r in found.refs for r in p.requires):
            continue
        score = p.score(found.refs)
        if p.hints:
            why.append(f"list content fits {score} of {len(p.hints)} signs")
        ranked.append((score, -idx, p, why))
    ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [(p, why) for _, _, p, why in ranked]


_PHASES = (("32.7.0", "31.7.0"), ("52.7.0", "51.7.0"), ("72.7.0", "71.7.0"))


def _power_check(values: dict[str, Value]) -> tuple[str, str]:
    """("ok" | "bad" | "unknown", detail): whether active power fits the phases' U × I.

    P can never exceed the apparent power U1·I1 + U2·I2 + U3·I3 (beyond rounding), and a power
    factor below 0.04 under load means the currents are scaled wrong (100× too large)."""
    by_cde: dict[str, float] = {}
    for ref, v in values.items():
        if ref.startswith("1-") and (type(v.value) is int or type(v.value) is float):
            cde = ref.split(":", 1)[1]
            by_cde.setdefault(cde, float(v.value))
    p_in, p_out = by_cde.get("1.7.0"), by_cde.get("2.7.0")
    phases = [(by_cde[u], by_cde[i]) for u, i in _PHASES if u in by_cde and i in by_cde]
    if (p_in is None and p_out is None) or not phases:
        return "unknown", "no P, U and I to compare"
    p = max(p_in or 0.0, p_out or 0.0)
    s = sum(u * i for u, i in phases)
    if p < 5 and s < 50:
        return "unknown", f"P {p:.0f} W, U×I {s:.0f} VA: too little load to tell"
    slack = 10.0 + 0.01 * sum(u for u, _ in phases)  # rounding of P and of the currents
    if p > 1.1 * s + slack:
        return "bad", f"P {p:.0f} W > U×I {s:.0f} VA"
    if s > 25 * (p + 20):
        return "bad", f"U×I {s:.0f} VA ≫ P {p:.0f} W"
    return "ok", f"P {p:.0f} W ≈ U×I {s:.0f} VA"


def _auto_positional(items: tuple[object, ...], system_title: bytes | None) -> Profile | None:
    """A positional profile recognised by the list's length, element kinds and first element, or None."""
    if not items:
        return None
    first = items[0]
    first_text = first.decode("latin-1") if type(first) is bytes else first if type(first) is str else None
    title = system_title[:3].decode("latin-1") if system_title is not None else None
    for p in cosem_profiles.PROFILES:
        if not p.layouts:
            continue
        rows = p.match(items)
        if rows is None:
            continue
        if p.list_id is not None:
            if first_text == p.list_id or (len(items) == 1 and type(first) is int):
                return p
        elif p.push_setup is not None:
            if _is_ln(first) and from_bytes(first) == p.push_setup:  # type: ignore[arg-type]
                return p
        elif p.device_prefix is not None:
            device = first_text if rows[0].obis == "0-0:42.0.0" else title
            if device is None or device.startswith(p.device_prefix):
                return p
    return None


def _auto_list_id(items: tuple[object, ...]) -> Profile | None:
    """A scaler profile recognised by the list id text in front of a self-describing list."""
    first = items[0] if items else None
    first_text = first.decode("latin-1") if type(first) is bytes else first if type(first) is str else None
    if first_text is not None:
        for p in cosem_profiles.PROFILES:
            if p.list_id == first_text and not p.layouts:
                return p
    return cosem_profiles.GENERIC


def _walk(items: tuple[object, ...], entries: list[_Entry], unlabelled: list[object], depth: int) -> None:
    """Pair OBIS codes with values: {obis, value[, {scaler, unit}]} structures or flat runs."""
    n = len(items)
    i = 0
    while i < n:
        el = items[i]
        if isinstance(el, Structure) and 2 <= len(el) <= 3 and type(el[0]) is bytes and _is_ln(el[0]):
            value = el[1]
            if not isinstance(value, tuple):
                su = _scaler_unit(el[2]) if len(el) == 3 else None
                entries.append((el[0], value, su, None))
                i += 1
                continue
        if type(el) is bytes and i + 1 < n and _is_ln(el) and not isinstance(items[i + 1], tuple):
            su = _scaler_unit(items[i + 2]) if i + 2 < n else None
            entries.append((el, items[i + 1], su, None))
            i += 3 if su is not None else 2
            continue
        if isinstance(el, tuple) and depth < axdr.MAX_DEPTH:
            _walk(el, entries, unlabelled, depth + 1)
        else:
            unlabelled.append(el)
        i += 1


def _meter_id(values: dict[str, Value], unlabelled: list[object], system_title: bytes | None) -> str:
    """Meter number from 0-0:96.1.0 / 96.1.1, the logical device name, a trailing text, the system title."""
    for suffix in _METER_ID_SUFFIXES:
        for pref in ("0-0", ""):
            for ref, val in values.items():
                if ref.endswith(suffix) and (not pref or ref.startswith(pref)) and isinstance(val.value, str):
                    text = val.value.strip("\x00 ")
                    if text:
                        return text
    device = values.get("0-0:42.0.0")
    if device is not None and isinstance(device.value, str) and device.value.strip():
        return device.value.strip("\x00 ")
    for item in reversed(unlabelled):
        if type(item) is bytes and 4 <= len(item) <= 32:
            item_text = _text(item)
            if item_text and item_text.strip("\x00 "):
                return item_text.strip("\x00 ")
    if system_title is not None:
        return system_title.hex().upper()
    return ""

