"""The pure part of the client: records, filters and the delivery ledger, no bus."""

from __future__ import annotations

import pytest

from ble_scanner.client.records import Advertisement, DeliveryLedger, make_filter

A = "C0:11:22:33:44:01"
B = "C0:11:22:33:44:02"


def adv(address: str = A, rssi: int | None = -60, data: bytes = b"\x01", seen: float = 0.0):  # type: ignore[no-untyped-def]
    return Advertisement.from_record(
        {"Address": address, "Rssi": rssi, "ManufacturerData": {0x02E1: data}, "LastSeen": seen}
    )


def test_records_are_immutable_and_keep_bytes() -> None:
    record = adv()
    assert record.manufacturer_data[0x02E1] == b"\x01"
    with pytest.raises(TypeError):
        record.manufacturer_data[0x02E1] = b"\x02"  # type: ignore[index]
    with pytest.raises(AttributeError):
        record.rssi = 0  # type: ignore[misc]


def test_unknown_record_keys_are_ignored_and_missing_address_refused() -> None:
    assert Advertisement.from_record({"Address": A, "Future": 1}).address == A
    with pytest.raises(ValueError, match="malformed"):
        Advertisement.from_record({"Rssi": -60})


def test_live_reports_always_pass() -> None:
    ledger = DeliveryLedger()
    assert ledger.discovered(adv())
    assert ledger.discovered(adv())  # a keep-alive is news outside a resync


def test_replay_of_what_the_user_has_is_swallowed_but_changes_pass() -> None:
    ledger = DeliveryLedger()
    ledger.discovered(adv(A))
    ledger.discovered(adv(B))
    ledger.source_lost()
    ledger.begin_resync()
    assert not ledger.discovered(adv(A))
    assert ledger.discovered(adv(B, rssi=-50))
    assert ledger.end_resync() == []


def test_devices_missing_from_the_replay_are_swallowed_once_then_expire() -> None:
    ledger = DeliveryLedger()
    first = adv(A)
    ledger.discovered(first)
    ledger.discovered(adv(B))
    ledger.begin_resync()
    ledger.discovered(adv(B))
    missing = ledger.end_resync()
    assert missing == [first]
    assert not ledger.discovered(adv(A))  # heard again unchanged after the replay
    assert ledger.discovered(adv(A))  # and from then on as usual
    assert not ledger.expire(first), "heard again: no longer the record that expires"


def test_expire_forgets_an_unheard_device_and_lost_reports_only_known_ones() -> None:
    ledger = DeliveryLedger()
    record = adv(A)
    ledger.discovered(record)
    assert ledger.expire(record)
    assert not ledger.lost(A)
    assert ledger.discovered(adv(A))


def test_filter_matching_follows_the_service_rules() -> None:
    flt = make_filter(manufacturer_ids=[0x02E1], local_name="Smart*", min_rssi=-70)
    named = Advertisement.from_record(
        {"Address": A, "Rssi": -60, "Name": "SmartShunt", "ManufacturerData": {0x02E1: b""}}
    )
    assert flt.matches(named)
    assert not flt.matches(adv())  # no name
    assert make_filter(service_uuid="180F").service_uuids == (
        "0000180f-0000-1000-8000-00805f9b34fb",
    )
    assert make_filter(address=A.lower()).to_dbus(subscription=False) == {"Addresses": ("as", [A])}
    with pytest.raises(ValueError, match="min_rssi"):
        make_filter(min_rssi=-200)
