"""A setting's value checked, stored and said in words: the table's rules applied.

``from_stored`` reads what localsettings holds, ``from_text`` what the
command line gives; both raise ValueError saying why a value is refused.
``stored`` and ``add_settings_definitions`` are the localsettings side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .table import SETTINGS, Kind, Setting, company_id
from .values import Stored, Value


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def range_text(setting: Setting) -> str:
    """The allowed values in a few words: ``10..86400``, ``at most 64 entries``."""
    low, high = setting.low, setting.high
    if setting.kind is Kind.CHOICE:
        return ", ".join(setting.choices)
    if setting.kind is Kind.LIST:
        return f"at most {high:g} entries" if high is not None else ""
    if setting.kind is Kind.TEXT:
        return f"at most {high:g} characters" if high is not None else ""
    if low is None or high is None:
        return ""
    if setting.kind is Kind.FLAG:
        return "0, 1"
    return f"{_number_text(low)}..{_number_text(high)}"


def _in_range(setting: Setting, value: float) -> None:
    low, high = setting.low, setting.high
    if (
        math.isnan(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        unit = f" {setting.unit}" if setting.unit else ""
        raise ValueError(f"{_number_text(value)} is outside {range_text(setting)}{unit}")


def _whole(value: float) -> int:
    if not float(value).is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _list(setting: Setting, texts: Iterable[str]) -> frozenset[str] | frozenset[int]:
    assert setting.item is not None
    items = [text.strip() for text in texts if text.strip()]
    if setting.high is not None and len(items) > setting.high:
        raise ValueError(f"{len(items)} entries, more than {setting.high:g}")
    return frozenset(setting.item(text) for text in items)  # type: ignore[return-value]


def from_stored(setting: Setting, raw: object) -> Value:
    """A value as localsettings holds it -> the checked, typed value; ValueError says why not."""
    kind = setting.kind
    if kind in (Kind.SECONDS, Kind.NUMBER, Kind.INTEGER, Kind.FLAG):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{raw!r} is not a number")
        number: float = float(raw) if kind in (Kind.SECONDS, Kind.NUMBER) else _whole(raw)
        _in_range(setting, number)
        if kind is Kind.FLAG:
            return bool(number)
        return number
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a string")
    if kind is Kind.LIST:
        return _list(setting, raw.split(","))
    if kind is Kind.CHOICE:
        word = raw.strip().lower()
        if word not in setting.choices:
            raise ValueError(f"{raw!r} is not one of {range_text(setting)}")
        return word
    if setting.high is not None and len(raw) > setting.high:
        raise ValueError(f"longer than {setting.high:g} characters")
    return raw


def from_text(setting: Setting, text: str) -> Value:
    """A command-line value -> the checked, typed value; ValueError says why not.

    A LIST's option is given once per entry: this checks one entry.
    """
    kind = setting.kind
    if kind is Kind.LIST:
        assert setting.item is not None
        return setting.item(text)
    if kind in (Kind.SECONDS, Kind.NUMBER):
        try:
            number = float(text)
        except ValueError:
            what = "a number of seconds" if kind is Kind.SECONDS else "a number"
            raise ValueError(f"{text!r} is not {what}") from None
        return from_stored(setting, number)
    if kind is Kind.INTEGER:
        try:
            whole = int(text, 10)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        return from_stored(setting, whole)
    return from_stored(setting, text)


# --- localsettings --------------------------------------------------------------


def stored(setting: Setting, value: Value) -> Stored:
    """``value`` as localsettings holds it: booleans as 0 / 1, lists comma separated."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, frozenset):
        if setting.item is company_id:  # as the Bluetooth SIG writes them: 0x02E1
            return ",".join(f"0x{v:04X}" for v in sorted(value))
        return ",".join(sorted(str(v) for v in value))
    raise TypeError(f"{setting.field} has no stored form")


def add_settings_definitions() -> list[dict[str, Stored]]:
    """The ``AddSettings`` entries for every setting localsettings keeps.

    The default's Python type picks the setting's type (int -> ``i``, float ->
    ``f``, str -> ``s``), so ``min`` and ``max`` are given in the same type.
    """
    definitions: list[dict[str, Stored]] = []
    for setting in SETTINGS:
        if setting.path is None:
            continue
        definition: dict[str, Stored] = {
            "path": setting.path,
            "default": stored(setting, setting.default),
        }
        if setting.kind in (Kind.SECONDS, Kind.NUMBER, Kind.INTEGER, Kind.FLAG):
            as_type = float if setting.kind in (Kind.SECONDS, Kind.NUMBER) else int
            if setting.low is not None and setting.high is not None:
                definition["min"] = as_type(setting.low)
                definition["max"] = as_type(setting.high)
        definitions.append(definition)
    return definitions


def default_text(setting: Setting) -> str:
    """The default in words, for --help and the table."""
    if setting.default_text:
        return setting.default_text
    default = setting.default
    if default is None:
        return "none"
    if setting.kind is Kind.FLAG:
        return str(int(bool(default))) if setting.name is not None else "off"
    if isinstance(default, frozenset) and setting.name is None:
        return "none"
    if isinstance(default, frozenset | str):
        text = stored(setting, default)
        return str(text) if text != "" else '""'
    return _number_text(default)
