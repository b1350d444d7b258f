"""The command line: every option of the settings table, its --help and its checks."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .checks import default_text, from_text, range_text
from .table import PROCESS_OPTIONS, SETTINGS, Kind, Setting
from .values import ScannerConfig, Value, with_values


def _option_help(setting: Setting) -> str:
    facts = []
    allowed = range_text(setting)
    if allowed and setting.kind is not Kind.FLAG:
        facts.append(f"{allowed}{' ' + setting.unit if setting.unit else ''}")
    if setting.kind is Kind.LIST:
        facts.append("repeatable")
    elif setting.kind is not Kind.FLAG:
        facts.append(f"default {default_text(setting)}")
    if setting.name is not None:
        facts.append(f"localsettings {setting.name}")
    help_text = f"{setting.help} ({'; '.join(facts)})" if facts else setting.help
    return help_text.replace("%", "%%")  # argparse formats help with %


def _argument_type(setting: Setting) -> Callable[[str], Value]:
    def parse(text: str) -> Value:
        try:
            return from_text(setting, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every option of the table, with its ``--help`` text and checks, on ``parser``."""
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        if setting.flag is None:
            continue
        if setting.kind is Kind.FLAG:
            parser.add_argument(
                setting.flag, dest=setting.field, action="store_true", help=_option_help(setting)
            )
            continue
        parser.add_argument(
            setting.flag,
            dest=setting.field,
            type=_argument_type(setting),
            action="append" if setting.kind is Kind.LIST else "store",
            default=None if setting.kind is Kind.LIST else setting.default,
            metavar=setting.metavar,
            help=_option_help(setting),
        )


def config_from_args(args: argparse.Namespace) -> ScannerConfig:
    """The options given, over the table's defaults; ValueError if a list is too long."""
    values: dict[str, Value] = {}
    for setting in SETTINGS:
        if setting.flag is None:
            continue
        value = getattr(args, setting.field)
        if value is None:
            continue
        if setting.kind is Kind.LIST:
            if setting.high is not None and len(value) > setting.high:
                raise ValueError(
                    f"{setting.flag}: given {len(value)} times, at most {setting.high:g}"
                )
            value = frozenset(value)
        values[setting.field] = value
    return with_values(ScannerConfig(), values)
