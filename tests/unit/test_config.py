"""The settings table and what is made from it: options, --help, AddSettings, checks, README."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from ble_scanner import config
from ble_scanner.config import (
    BY_FIELD,
    PROCESS_OPTIONS,
    README_BEGIN,
    README_END,
    SETTINGS,
    Kind,
    ScannerConfig,
    add_options,
    add_settings_definitions,
    config_from_args,
    from_stored,
    from_text,
    markdown,
    readme_with_table,
    table_is_current,
)
from ble_scanner.modes import Ingest, ScanMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The document that holds the generated settings table.
TABLE_DOCUMENT = "docs/settings.md"
REGENERATE = f"python -m ble_scanner.config --update {TABLE_DOCUMENT}"


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so a test can read the message."""

    def error(self, message: str) -> NoReturn:
        raise _Refused(message)


def parse(*argv: str) -> ScannerConfig:
    parser = _Parser()
    add_options(parser)
    return config_from_args(parser.parse_args(list(argv)))


# --- the table itself -----------------------------------------------------------


def test_every_config_field_has_one_row_and_the_records_defaults_are_the_tables() -> None:
    fields = [f.name for f in dataclasses.fields(ScannerConfig)]
    assert sorted(fields) == sorted(s.field for s in SETTINGS)
    defaults = ScannerConfig()
    for setting in SETTINGS:
        assert getattr(defaults, setting.field) == setting.default, setting.field


def test_paths_and_flags_are_the_ones_users_already_have() -> None:
    """The contract: renaming either strands stored values and scripts."""
    assert [s.name for s in SETTINGS if s.name] == [
        "Adapters",
        "LostTimeout",
        "CacheSize",
        "BroadcastKeepAlive",
        "BroadcastRssiDelta",
        "BroadcastInterval",
        "IgnoreCompanyIds",
        "ScanMode",
        "PublishDevices",
        "PublishDevicesMax",
        "CustomName",
        "ShedLoadAverage",
        "ShedCpuPercent",
        "BleSensorsFeed",
        "BleSensorsCompanyIds",
        "BleSensorsBluetoothWas",
        "SilenceRestart",
        "SilencePowerCycle",
        "DrainTimeout",
        "Ingest",
        "SteerGroup",
        "MaxSubscriptionsPerUser",
        "SubscriptionsReservedForRoot",
        "MaxLeasesPerUser",
    ]
    assert [s.flag for s in (*SETTINGS, *PROCESS_OPTIONS) if s.flag] == [
        "--adapter",
        "--lost-timeout",
        "--cache-size",
        "--keep-alive",
        "--rssi-delta",
        "--broadcast-interval",
        "--ignore-company-id",
        "--ignore-address",
        "--min-rssi",
        "--scan-mode",
        "--shed-load-average",
        "--shed-cpu-percent",
        "--ble-sensors-feed",
        "--silence-restart",
        "--silence-power-cycle",
        "--drain-timeout",
        "--ingest",
        "--mgmt-socket",
        "--steer-group",
        "--max-subscriptions-per-user",
        "--subscriptions-reserved-for-root",
        "--max-leases-per-user",
        "--no-settings",
        "--settings-wait",
        "--state-file",
        "--state-save-interval",
        "--claims-dir",
        "--debug",
    ]
    assert BY_FIELD["lost_timeout"].path == "/Settings/BleScanner/LostTimeout"


def test_every_range_has_a_reason_and_holds_its_default() -> None:
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        if setting.kind in (
            Kind.SECONDS,
            Kind.NUMBER,
            Kind.INTEGER,
            Kind.LIST,
            Kind.TEXT,
            Kind.CHOICE,
        ):
            assert setting.why, f"{setting.field} has a range without a reason"
        if setting.default is not None and setting.kind is not Kind.FLAG:
            assert from_stored(setting, config.stored(setting, setting.default)) == setting.default


def test_scan_modes_are_the_bluez_sides() -> None:
    assert tuple(mode.value for mode in ScanMode) == config.SCAN_MODES


def test_ingests_are_the_bluez_sides() -> None:
    assert tuple(ingest.value for ingest in Ingest) == config.INGESTS


def test_every_setting_is_set_somewhere() -> None:
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        assert setting.flag or setting.name, setting.field


# --- values from localsettings --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ("lost_timeout", 10, 10.0),
        ("lost_timeout", 86400.0, 86400.0),
        ("cache_size", 100, 100),
        ("cache_size", 50000.0, 50000),  # a double that is whole
        ("broadcast_keep_alive", 0.0, 0.0),
        ("broadcast_rssi_delta", 147, 147),
        ("publish_devices", 1, True),
        ("scan_mode", " Passive ", "passive"),
        ("adapters", "hci1, hci0,", frozenset({"hci0", "hci1"})),
        ("adapters", "", frozenset()),
        ("ignore_company_ids", "0x004C, 89", frozenset({0x004C, 89})),
        ("custom_name", "x" * 128, "x" * 128),
    ],
)
def test_a_stored_value_in_range_is_taken(field: str, raw: object, value: object) -> None:
    assert from_stored(BY_FIELD[field], raw) == value


@pytest.mark.parametrize(
    ("field", "raw", "reason"),
    [
        ("lost_timeout", 9.9, "9.9 is outside 10..86400 s"),
        ("lost_timeout", 86401, "86401 is outside 10..86400 s"),
        ("lost_timeout", math.nan, "nan is outside"),
        ("lost_timeout", "180", "'180' is not a number"),
        ("lost_timeout", True, "True is not a number"),
        ("cache_size", 99, "99 is outside 100..50000"),
        ("cache_size", 1000.5, "1000.5 is not a whole number"),
        ("broadcast_keep_alive", -1.0, "-1 is outside 0..86400 s"),
        ("broadcast_rssi_delta", 148, "148 is outside 0..147 dBm"),
        ("publish_devices", 2, "2 is outside 0, 1"),
        ("publish_devices_max", 0, "0 is outside 1..100"),
        ("scan_mode", "turbo", "'turbo' is not one of active, passive, auto"),
        ("scan_mode", 1, "1 is not a string"),
        ("adapters", "hci0, wlan0", "'wlan0' is not an adapter name like hci0"),
        ("adapters", "hci", "'hci' is not an adapter name like hci0"),
        ("adapters", ",".join(f"hci{n}" for n in range(65)), "65 entries, more than 64"),
        ("ignore_company_ids", "0x4C, apple", "'apple' is not a company id"),
        ("ignore_company_ids", "0x10000", "'0x10000' is outside 0..0xFFFF"),
        ("custom_name", "x" * 129, "longer than 128 characters"),
    ],
)
def test_a_stored_value_out_of_range_is_refused_with_the_reason(
    field: str, raw: object, reason: str
) -> None:
    with pytest.raises(ValueError) as refused:
        from_stored(BY_FIELD[field], raw)
    assert reason in str(refused.value)


# --- AddSettings ------------------------------------------------------------------


def test_add_settings_has_one_entry_per_stored_setting_typed_as_localsettings_wants() -> None:
    definitions = add_settings_definitions()
    assert [d["path"] for d in definitions] == [s.path for s in SETTINGS if s.path]
    by_path = {d["path"]: d for d in definitions}
    assert by_path["/Settings/BleScanner/LostTimeout"] == {
        "path": "/Settings/BleScanner/LostTimeout",
        "default": 180.0,
        "min": 10.0,
        "max": 86400.0,
    }
    assert by_path["/Settings/BleScanner/PublishDevices"] == {
        "path": "/Settings/BleScanner/PublishDevices",
        "default": 0,
        "min": 0,
        "max": 1,
    }
    assert by_path["/Settings/BleScanner/Adapters"] == {
        "path": "/Settings/BleScanner/Adapters",
        "default": "",
    }
    for definition in definitions:
        # localsettings refuses booleans; min, max and default share one type.
        assert not any(isinstance(v, bool) for v in definition.values()), definition
        kinds = {type(definition[key]) for key in ("default", "min", "max") if key in definition}
        assert len(kinds) == 1, definition


# --- the command line -------------------------------------------------------------


def test_no_options_give_the_tables_defaults() -> None:
    assert parse() == ScannerConfig()


def test_options_fill_the_record() -> None:
    got = parse(
        "--adapter", "hci1", "--adapter", "hci0",
        "--lost-timeout", "300", "--cache-size", "2000", "--keep-alive", "0",
        "--rssi-delta", "4", "--ignore-company-id", "0x004C", "--ignore-company-id", "89",
        "--ignore-address", "aa:bb:cc:dd:ee:ff", "--min-rssi", "-90", "--scan-mode", "AUTO",
    )  # fmt: skip
    assert got == ScannerConfig(
        adapters=frozenset({"hci0", "hci1"}),
        lost_timeout=300.0,
        cache_size=2000,
        broadcast_keep_alive=0.0,
        broadcast_rssi_delta=4,
        ignore_company_ids=frozenset({0x004C, 89}),
        ignore_addresses=frozenset({"AA:BB:CC:DD:EE:FF"}),
        min_rssi=-90,
        scan_mode="auto",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lost-timeout", "5"], "argument --lost-timeout: 5 is outside 10..86400 s"),
        (["--lost-timeout", "soon"], "argument --lost-timeout: 'soon' is not a number of seconds"),
        (["--cache-size", "1"], "argument --cache-size: 1 is outside 100..50000"),
        (["--cache-size", "1e3"], "argument --cache-size: '1e3' is not a whole number"),
        (["--keep-alive", "86401"], "argument --keep-alive: 86401 is outside 0..86400 s"),
        (["--rssi-delta", "200"], "argument --rssi-delta: 200 is outside 0..147 dBm"),
        (["--min-rssi", "-128"], "argument --min-rssi: -128 is outside -127..20 dBm"),
        (["--scan-mode", "turbo"], "argument --scan-mode: 'turbo' is not one of active, passive"),
        (["--adapter", "wlan0"], "argument --adapter: 'wlan0' is not an adapter name like hci0"),
        (
            ["--ignore-company-id", "apple"],
            "argument --ignore-company-id: 'apple' is not a company",
        ),
        (["--ignore-address", "nope"], "argument --ignore-address: not a Bluetooth address"),
        (["--settings-wait", "61"], "argument --settings-wait: 61 is outside 0..60 s"),
    ],
)
def test_a_bad_option_is_refused_naming_the_option_and_the_range(
    argv: list[str], message: str
) -> None:
    with pytest.raises(_Refused) as refused:
        parse(*argv)
    assert message in str(refused.value)


def test_a_list_given_too_often_is_refused() -> None:
    argv = [arg for n in range(65) for arg in ("--adapter", f"hci{n}")]
    with pytest.raises(ValueError, match="--adapter: given 65 times, at most 64"):
        parse(*argv)


def test_help_shows_every_option_with_its_range_default_and_localsettings_name() -> None:
    parser = argparse.ArgumentParser(formatter_class=_OneLine)
    add_options(parser)
    text = parser.format_help()
    assert "--lost-timeout S" in text
    assert "(10..86400 s; default 180; localsettings LostTimeout)" in text
    assert "(0..147 dBm; default 8; localsettings BroadcastRssiDelta)" in text
    assert "(-127..20 dBm; default none)" in text
    assert "(at most 64 entries; repeatable; localsettings Adapters)" in text
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        if setting.flag:
            assert setting.flag in text


class _OneLine(argparse.HelpFormatter):
    """No wrapping, so a test can look for a phrase."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=10_000, max_help_position=10_000)


# --- the README -------------------------------------------------------------------


def test_markdown_has_a_row_per_setting_and_a_reason_per_range() -> None:
    text = markdown()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(SETTINGS) + len(PROCESS_OPTIONS)  # header + one each
    columns = rows[0].count(" | ")
    assert all(row.replace("\\|", "").count(" | ") == columns for row in rows)
    assert "| `LostTimeout` | `--lost-timeout S` | float (s) | `180` | 10..86400 | live |" in text
    assert "| — | `--min-rssi DBM` | int (dBm) | `none` | -127..20 | at start |" in text
    assert "| Most devices kept; the least recently heard go first | 100 keeps" in text


def test_readme_block_is_replaced_and_nothing_else() -> None:
    readme = f"intro\n{README_BEGIN}\nold table\n{README_END}\noutro\n"
    assert (
        readme_with_table(readme, "new\n") == f"intro\n{README_BEGIN}\nnew\n{README_END}\noutro\n"
    )
    with pytest.raises(ValueError, match="no <!-- settings-table:begin -->"):
        readme_with_table("no markers\n", "new\n")


def test_docs_settings_holds_the_generated_table() -> None:
    path = os.path.join(ROOT, TABLE_DOCUMENT)
    with open(path, encoding="utf-8") as f:
        readme = f.read()
    has_block = README_BEGIN in readme and README_END in readme
    assert has_block, (
        f"{TABLE_DOCUMENT} needs a settings table between {README_BEGIN} and {README_END}; "
        f"put the two lines under its settings heading and run: {REGENERATE}"
    )
    assert table_is_current(path), (
        f"{TABLE_DOCUMENT}'s settings table differs from ble_scanner/config's; run: {REGENERATE}"
    )


def test_the_module_writes_and_checks_the_table_in_a_given_file(tmp_path: Path) -> None:
    document = tmp_path / "settings.md"
    document.write_text(f"# Settings\n{README_BEGIN}\nold\n{README_END}\nmore\n")

    def module(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ble_scanner.config", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    stale = module("--check", str(document))
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert module("--update", str(document)).returncode == 0
    assert document.read_text() == f"# Settings\n{README_BEGIN}\n{markdown()}{README_END}\nmore\n"
    assert module("--check", str(document)).returncode == 0


def test_the_module_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ble_scanner.config", "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == markdown()


def test_from_text_reads_one_list_entry() -> None:
    assert from_text(BY_FIELD["ignore_company_ids"], "0x004C") == 0x004C
