"""RecordMerger: full records back from a batched subscription's changed-keys items."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from dataclasses import fields as dc_fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.bus.marshal import snapshot_body
from ble_scanner.bus.records import changed_entry, record_entry
from ble_scanner.client.merge import REMOVED, RecordMerger
from ble_scanner.client.records import Advertisement, advertisement_of
from ble_scanner.core.delta import Sent, changes, sent_of
from ble_scanner.service import record_variants
from tests.unit.test_delta import ADDRESS, device, states, unmarshal

A = "C0:11:22:33:44:01"
FULL = {
    "Address": A,
    "AddressType": "random",
    "Adapter": "hci0",
    "Path": "/org/bluez/hci0/dev_C0_11_22_33_44_01",
    "Rssi": -60,
    "Name": "Ruuvi 44CC",
    "ManufacturerData": {0x0499: b"\x05\x12"},
    "ServiceData": {},
    "ServiceUuids": [],
    "FirstSeen": 100.0,
    "LastSeen": 100.0,
}


def test_a_full_record_is_the_record() -> None:
    merger = RecordMerger()
    assert merger.item(A, FULL) == Advertisement.from_record(FULL)
    assert len(merger) == 1


def test_changed_keys_rebuild_the_full_record_and_keep_what_did_not_change() -> None:
    merger = RecordMerger()
    first = merger.item(A, FULL)
    second = merger.item(A, {"Rssi": -58, "LastSeen": 101.0})
    assert second == Advertisement.from_record({**FULL, "Rssi": -58, "LastSeen": 101.0})
    # What did not change is the previous record's own (immutable) object.
    assert second.manufacturer_data is first.manufacturer_data
    third = merger.item(A, {"ManufacturerData": {0x0499: b"\x05\x13"}, "LastSeen": 102.0})
    assert third.manufacturer_data == {0x0499: b"\x05\x13"}
    assert third.rssi == -58
    assert first.manufacturer_data == {0x0499: b"\x05\x12"}, "earlier records are untouched"


def test_removed_keys_go_back_to_absent() -> None:
    merger = RecordMerger()
    merger.item(A, FULL)
    adv = merger.item(A, {REMOVED: ["Name", "ManufacturerData", "Future"], "LastSeen": 101.0})
    without = {k: v for k, v in FULL.items() if k not in ("Name", "ManufacturerData")}
    assert adv == Advertisement.from_record({**without, "LastSeen": 101.0})
    assert adv.name is None and dict(adv.manufacturer_data) == {}


def test_a_full_record_replaces_everything_kept() -> None:
    merger = RecordMerger()
    merger.item(A, FULL)
    replay = {k: v for k, v in FULL.items() if k != "Name"}
    assert merger.item(A, replay).name is None


def test_lost_forgets_so_changes_alone_are_refused() -> None:
    merger = RecordMerger()
    merger.item(A, FULL)
    merger.lost(A)
    assert len(merger) == 0
    with pytest.raises(ValueError, match="full record"):
        merger.item(A, {"Rssi": -50})
    assert merger.item(A, FULL) == Advertisement.from_record(FULL)
    merger.clear()
    with pytest.raises(ValueError):
        merger.item(A, {"Rssi": -50})


def test_a_malformed_item_changes_nothing() -> None:
    merger = RecordMerger()
    kept = merger.item(A, FULL)
    with pytest.raises(ValueError, match="malformed"):
        merger.item(A, {"Rssi": "loud", "LastSeen": 101.0})
    with pytest.raises(ValueError, match="malformed"):
        merger.item(A, {REMOVED: "Name"})
    assert merger.item(A, {"LastSeen": 102.0}) == Advertisement.from_record(
        {**FULL, "LastSeen": 102.0}
    )
    assert kept.last_seen == 100.0


# --- the property: the service's delta (core/delta.py) merged here is the full record ---

LOST = "lost"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.just(LOST) | states, min_size=1, max_size=10))
def test_delta_then_merge_is_the_full_record(sequence: list[Any]) -> None:
    """Random reports of one device, lost now and then: each item the service would send
    (full first and after a loss, else changed keys), read through dbus-fast's
    unmarshaller and merged, is the Advertisement of the full record."""
    merger = RecordMerger()
    last: Sent | None = None
    for step in sequence:
        if step == LOST:
            merger.lost(ADDRESS)
            last = None
            continue
        d = device(**step)
        now = sent_of(d)
        item = record_entry(d) if last is None else changed_entry(d, changes(last, now))
        [(address, values)] = unmarshal(snapshot_body([item]))
        full = Advertisement.from_record({k: v.value for k, v in record_variants(d).items()})
        assert merger.item(address, values) == full
        last = now


def test_advertisement_of_is_the_constructor() -> None:
    fields = {
        f.name: getattr(Advertisement.from_record(FULL), f.name) for f in dc_fields(Advertisement)
    }
    built = advertisement_of(fields)
    assert type(built) is Advertisement
    assert built == Advertisement(**fields)
    assert repr(built) == repr(Advertisement(**fields))
    with pytest.raises(FrozenInstanceError):
        built.rssi = 0  # type: ignore[misc]
