"""DeviceView: BlueZ's Device1 properties accumulate into validated content."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.core.record import (
    EMPTY_CONTENT,
    Content,
    DeviceView,
    MalformedData,
    content_with,
    normalize_address,
    normalize_uuid,
)

PATH = "/org/bluez/hci0/dev_C0_11_22_33_44_55"


def first_sighting(**extra: object) -> dict[str, object]:
    props: dict[str, object] = {"Address": "C0:11:22:33:44:55", "AddressType": "random"}
    props.update(extra)
    return props


def test_first_sighting_with_rssi_is_a_report() -> None:
    view = DeviceView(PATH, "hci0")
    assert view.update(first_sighting(RSSI=-60, ManufacturerData={0x02E1: b"\x10\x01"}))
    assert view.address == "C0:11:22:33:44:55"
    assert view.address_type == "random"
    assert view.rssi == -60
    assert view.content.manufacturer_data == {0x02E1: b"\x10\x01"}


def test_connection_state_change_is_not_a_report() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(RSSI=-60))
    assert not view.update({"Connected": True})


def test_rssi_invalidated_at_end_of_discovery_keeps_last_reading() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(RSSI=-60, TxPower=4))
    assert not view.update({}, ["RSSI", "TxPower"])
    assert view.rssi == -60
    assert view.content.tx_power == 4


def test_rssi_127_means_not_available() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(RSSI=127))
    assert view.rssi is None


def test_identical_payload_keeps_the_same_content_object() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(ManufacturerData={0x0499: b"\x05\x01"}))
    before = view.content
    view.update({"ManufacturerData": {0x0499: b"\x05\x01"}, "RSSI": -70})
    assert view.content is before


def test_changed_payload_gives_new_content() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(ManufacturerData={0x0499: b"\x05\x01"}))
    before = view.content
    view.update({"ManufacturerData": {0x0499: b"\x05\x02"}})
    assert view.content is not before
    assert view.content.manufacturer_data == {0x0499: b"\x05\x02"}


def test_service_data_uuids_are_normalised_to_128_bit() -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(ServiceData={"0000FCD2-0000-1000-8000-00805F9B34FB": b"\x40"}))
    assert view.content.service_data == {"0000fcd2-0000-1000-8000-00805f9b34fb": b"\x40"}


@pytest.mark.parametrize(
    "props",
    [
        {"Address": "not an address"},
        {"ManufacturerData": {0x10000: b""}},
        {"ManufacturerData": {1: b"x" * 2000}},
        {"ServiceData": {"zz": b""}},
        {"RSSI": "strong"},
        {"RSSI": -500},
        {"AddressType": "weird"},
        {"Name": "\udcff"},
        {"UUIDs": ["1800"] * 100},
    ],
)
def test_malformed_values_are_refused_and_change_nothing(props: dict[str, object]) -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(RSSI=-50, Name="ok"))
    before = (view.address, view.rssi, view.content)
    with pytest.raises(MalformedData):
        view.update(props)
    assert (view.address, view.rssi, view.content) == before


def test_uuid_forms() -> None:
    assert normalize_uuid("180F") == "0000180f-0000-1000-8000-00805f9b34fb"
    assert normalize_uuid("0x180f") == "0000180f-0000-1000-8000-00805f9b34fb"
    assert normalize_uuid("0000180F") == "0000180f-0000-1000-8000-00805f9b34fb"
    with pytest.raises(MalformedData):
        normalize_uuid("180")


def test_address_is_upper_cased() -> None:
    assert normalize_address("c0:11:22:33:44:55") == "C0:11:22:33:44:55"


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.text(max_size=40), max_size=5),
    st.dictionaries(st.integers(-5, 70000), st.binary(max_size=40), max_size=3),
    st.dictionaries(st.text(max_size=40), st.binary(max_size=40), max_size=3),
)
_keys = st.sampled_from(
    [
        "Address",
        "AddressType",
        "Name",
        "RSSI",
        "TxPower",
        "ManufacturerData",
        "ServiceData",
        "UUIDs",
        "Connected",
        "Unknown",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6), st.lists(_keys, max_size=3))
def test_fuzzed_properties_never_crash_and_never_half_apply(
    changed: dict[str, object], invalidated: list[str]
) -> None:
    view = DeviceView(PATH, "hci0")
    view.update(first_sighting(RSSI=-50))
    before = (view.address, view.address_type, view.rssi, view.content)
    try:
        view.update(changed, invalidated)
    except (MalformedData, TypeError, ValueError, AttributeError):
        assert (view.address, view.address_type, view.rssi, view.content) == before


def test_content_with_new_values_is_the_frozen_content_the_constructor_makes() -> None:
    args = ("Ruuvi", -8, {0x0499: b"\x05"}, {"0000180f-0000-1000-8000-00805f9b34fb": b"d"}, ())
    made = content_with(EMPTY_CONTENT, *args)
    assert type(made) is Content
    assert made == Content(*args)
    assert repr(made) == repr(Content(*args))
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        made.name = "other"  # type: ignore[misc]
    assert content_with(made, *args) is made
    assert content_with(made, "Ruuvi", -8, {0x0499: b"\x05"}, *args[3:]) is not made
