"""Fault 11: malformed BlueZ data is skipped and counted, and the record parser never crashes.

The service here reads Device1 signals whatever the suite's ingest: the
malformed data is BlueZ's D-Bus data. Malformed management frames are
tests/service/test_mgmt_ingest.py and tests/unit/test_mgmt.py.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from dbus_fast import Message, Variant
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.config import ScannerConfig
from ble_scanner.const import BLUEZ_DEVICE, MAX_PAYLOAD_BYTES, RSSI_MAX, RSSI_MIN
from ble_scanner.core.record import DeviceView, MalformedData, unwrap_device
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator, malformed
from ble_scanner.testing.simulator.wire import interfaces_removed, properties_changed
from tests.helpers import wait_until

ADAPTER = "hci0"
GOOD = "C0:11:22:33:44:01"
# A local run stays short (300 cases).
# CI's deep run (10 000 cases) happens once in its matrix, in the configuration
# that sets BLE_SCANNER_FUZZ_EXAMPLES (Makefile, test-newest); the parser is pure,
# so running it again per ingest or per dbus-fast would only repeat the work.
FUZZ_EXAMPLES = int(os.environ.get("BLE_SCANNER_FUZZ_EXAMPLES") or 300)
# Malformed objects injected to show the log is rate-limited, not a flood.
FLOOD = 200
# What the bluez.py edge catches; anything else escaping the parser is a bug.
CAUGHT = (MalformedData, AttributeError, TypeError, ValueError)


@pytest.fixture
def app_config() -> ScannerConfig:
    """The service of these tests reads Device1 signals (D-Bus ingest)."""
    return ScannerConfig(ingest="dbus")


def malformed_count(app: ScannerApp) -> int:
    return app.status().malformed


def cached(app: ScannerApp) -> set[str]:
    assert app.hub is not None
    return {d.address for d in app.hub.cache}


async def test_malformed_bluez_data_is_skipped_counted_and_logged_once(
    app: ScannerApp, bluez: BluezSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ble_scanner.bluez.objects")
    adapter_path = bluez.adapter(ADAPTER).path
    # Each sample BlueZ would never send; odd_name is valid (if ugly) text and is kept.
    rejected = ["wrong_types", "oversized", "missing_address", "bad_values"]
    for i, sample in enumerate(malformed.SAMPLES.values()):
        bluez.inject_device(
            ADAPTER, f"C0:11:22:33:55:{i:02X}", sample(f"C0:11:22:33:55:{i:02X}", adapter_path)
        )
    await wait_until(lambda: malformed_count(app) >= len(rejected), what="malformed counted")
    await wait_until(lambda: "C0:11:22:33:55:02" in cached(app), what="the odd name kept")
    # A flood of the same fault: counted each time, logged once.
    for i in range(FLOOD):
        bluez.inject_device(
            ADAPTER,
            f"C0:11:22:33:66:{i:02X}",
            malformed.wrong_types(f"C0:11:22:33:66:{i:02X}", adapter_path),
        )
    await wait_until(lambda: malformed_count(app) >= len(rejected) + FLOOD, what="flood counted")
    # Wrong signatures on the signals themselves, unknown interfaces, removals twice.
    path = "/org/bluez/hci0/dev_C0_11_22_33_55_02"
    bluez.server.send(
        Message.new_signal(
            path, "org.freedesktop.DBus.Properties", "PropertiesChanged", "s", [BLUEZ_DEVICE]
        )
    )
    bluez.server.send(properties_changed(path, BLUEZ_DEVICE, {"RSSI": Variant("s", "loud")}, []))
    bluez.inject_object("/org/bluez/hci0/thing", {"org.example.Unknown1": {"X": Variant("u", 1)}})
    for _ in range(2):
        bluez.server.send(interfaces_removed(path, [BLUEZ_DEVICE]))
        bluez.server.send(
            interfaces_removed("/org/bluez/hci9/dev_00", [BLUEZ_DEVICE, "org.bluez.Adapter1"])
        )
    await bluez.drain()
    counted = len(rejected) + FLOOD + 2  # the two wrong signatures
    await wait_until(lambda: malformed_count(app) >= counted, what="signal faults counted")
    # Scanning goes on: a good device arrives and nothing bad reached the cache.
    await bluez.advertise(ADAPTER, GOOD, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_until(lambda: GOOD in cached(app), what="a good report after all that")
    assert malformed_count(app) == counted
    assert cached(app) == {GOOD, "C0:11:22:33:55:02"}
    assert app.bluez is not None and app.bluez.adapters
    lines = [r for r in caplog.records if "malformed Device1" in r.getMessage()]
    assert len(lines) == 1, f"{len(lines)} log lines for {FLOOD + 3} malformed devices"


# --- the parser, fuzzed -------------------------------------------------------------

# D-Bus strings are valid UTF-8 without NUL (the daemon checks), so no surrogates.
_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
)
_short_bytes = st.binary(max_size=40)
# Sizes around the limit, drawn cheaply (content does not matter there).
_big_bytes = st.integers(MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES + 1).map(bytes)
_addresses = st.one_of(
    st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
        lambda b: ":".join(f"{x:02x}" if b[0] & 1 else f"{x:02X}" for x in b)
    ),
    st.sampled_from(["", "ZZ:not:an:address", "C0:11:22:33:44", "C0-11-22-33-44-01"]),
    _text,
)
_uuids = st.one_of(
    st.uuids().map(str),
    st.integers(0, 0xFFFF).map(lambda v: f"{v:04x}"),
    st.integers(0, 0xFFFFFFFF).map(lambda v: f"{v:08X}"),
    _text,
)
_wrong = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: Variant("u", v)),
    st.booleans().map(lambda v: Variant("b", v)),
    _short_bytes.map(lambda v: Variant("ay", v)),
    _text.map(lambda v: Variant("s", v)),
    st.integers(-(2**15), 2**15 - 1).map(lambda v: Variant("n", v)),
    st.lists(_text, max_size=3).map(lambda v: Variant("as", v)),
    st.dictionaries(
        st.integers(0, 65535), _short_bytes.map(lambda b: Variant("ay", b)), max_size=2
    ).map(lambda v: Variant("aa{qv}", [v])),
)
_payload = st.one_of(_short_bytes, _big_bytes).map(lambda b: Variant("ay", b))
_payload_or_wrong = st.one_of(_payload, _payload, _wrong)
_right: dict[str, st.SearchStrategy[Variant]] = {
    "Address": _addresses.map(lambda v: Variant("s", v)),
    "AddressType": st.sampled_from(["public", "random", "martian", ""]).map(
        lambda v: Variant("s", v)
    ),
    "Adapter": st.sampled_from(["/org/bluez/hci0", "/"]).map(lambda v: Variant("o", v)),
    "Name": _text.map(lambda v: Variant("s", v)),
    "RSSI": st.integers(-(2**15), 2**15 - 1).map(lambda v: Variant("n", v)),
    "TxPower": st.integers(-(2**15), 2**15 - 1).map(lambda v: Variant("n", v)),
    "ManufacturerData": st.dictionaries(st.integers(0, 65535), _payload_or_wrong, max_size=4).map(
        lambda v: Variant("a{qv}", v)
    ),
    "ServiceData": st.dictionaries(_uuids, _payload_or_wrong, max_size=4).map(
        lambda v: Variant("a{sv}", v)
    ),
    "UUIDs": st.lists(_uuids, max_size=6).map(lambda v: Variant("as", v)),
}
_keys = [*_right, "AdvertisingFlags", "Connected", "Alias"]


# Per key: the right type three times in four, a wrong one otherwise (built once:
# building strategies per example costs more than running the parser).
_per_key = {
    key: st.one_of(
        _right.get(key, _wrong), _right.get(key, _wrong), _right.get(key, _wrong), _wrong
    )
    for key in _keys
}
_key_sets = st.lists(st.sampled_from(_keys), max_size=len(_keys), unique=True)
_invalidated = st.lists(st.sampled_from(["RSSI", "TxPower", "Name", "Bogus"]), max_size=2)


@st.composite
def device_changes(draw: st.DrawFn) -> tuple[dict[str, Variant], list[str]]:
    """One InterfacesAdded / PropertiesChanged body: mostly right types, some wrong."""
    changed = {key: draw(_per_key[key]) for key in draw(_key_sets)}
    return changed, draw(_invalidated)


def _state(view: DeviceView) -> tuple[Any, ...]:
    return (view.address, view.address_type, view.rssi, view.content)


# The CI tier's 10 000 cases take ~50 s with every core busy (make test-loaded) and
# passed the suite's 120 s hang limit beside other runs as well: a bound, not a hang.
@pytest.mark.timeout(600)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(device_changes(), min_size=1, max_size=4))
def test_record_parser_never_crashes_and_keeps_only_valid_records(
    updates: list[tuple[dict[str, Variant], list[str]]],
) -> None:
    """The BlueZ edge (``record.unwrap_device``) and ``DeviceView.update``, as BlueZ signals drive them."""
    view = DeviceView("/org/bluez/hci0/dev_C0_11_22_33_44_01", ADAPTER)
    for changed, invalidated in updates:
        before = _state(view)
        try:
            view.update(unwrap_device(changed), invalidated)
        except CAUGHT:
            assert _state(view) == before, "a rejected update changed the view"
            continue
        assert view.address == "" or (
            len(view.address) == 17 and view.address == view.address.upper()
        )
        assert view.address_type in ("public", "random")
        assert view.rssi is None or RSSI_MIN <= view.rssi <= RSSI_MAX
        content = view.content
        for data in (*content.manufacturer_data.values(), *content.service_data.values()):
            assert isinstance(data, bytes) and len(data) <= MAX_PAYLOAD_BYTES
        assert all(0 <= k <= 0xFFFF for k in content.manufacturer_data)
        assert content.name is None or isinstance(content.name, str)
        assert all(isinstance(u, str) and len(u) == 36 for u in content.service_uuids)
        assert all(isinstance(u, str) and len(u) == 36 for u in content.service_data)
