"""core/delta.py: the keys an item of ChangedKeysOnly carries, and that merging them
rebuilds the full record (through the wire format, as a client reads it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dbus_fast import Variant
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.bus.marshal import (
    MESSAGE_SIGNAL,
    header_fields,
    message,
    snapshot_body,
)
from ble_scanner.bus.records import changed_entry, record_entry
from ble_scanner.core.cache import Device
from ble_scanner.core.delta import RECORD_KEYS, REMOVED, Changes, Sent, changes, sent_of
from ble_scanner.core.record import Content
from ble_scanner.core.sources import Source
from ble_scanner.service import record_variants
from tests import wire_cost

ADDRESS = "C0:11:22:33:44:55"
UUID = "0000181a-0000-1000-8000-00805f9b34fb"
BASE = Content("Sensor", -4, {0x0499: b"\x01\x02"}, {UUID: b"\x03"}, (UUID,))


def device(content: Content = BASE, rssi: int | None = -60, **state: Any) -> Device:
    d = Device(ADDRESS, 1_700_000_000.25, 12.0)
    d.adapter, d.address_type = "hci0", "random"
    d.path = "/org/bluez/hci0/dev_C0_11_22_33_44_55"
    d.content, d.rssi, d.last_seen = content, rssi, 1_700_000_001.5
    for key, value in state.items():
        if key == "interval":
            d.learner.interval = value
        elif key == "sources":  # adapter -> its latest reading (None: none)
            for adapter, reading in value.items():
                source = d.sources[adapter] = Source(f"/org/bluez/{adapter}/dev_X", 12.0)
                source.hear(reading, 12.0)
        else:
            setattr(d, key, value)
    return d


def test_the_same_record_has_no_changes() -> None:
    sent = sent_of(device())
    assert changes(sent, sent) == Changes((), ())


def test_a_new_reading_is_its_payload_and_the_time() -> None:
    before = sent_of(device())
    after = sent_of(
        device(replace(BASE, manufacturer_data={0x0499: b"\x09"}), last_seen=1_700_000_002.0)
    )
    assert changes(before, after) == Changes(("ManufacturerData", "LastSeen"), ())


def test_rssi_and_a_learned_interval_are_changes() -> None:
    before = sent_of(device())
    after = sent_of(device(rssi=-70, interval=1.5))
    assert changes(before, after) == Changes(("Interval", "Rssi"), ())


def test_keys_gone_are_removed_and_keys_new_are_carried() -> None:
    before = sent_of(device(restored=True))
    after = sent_of(device(replace(BASE, name=None, tx_power=None, service_uuids=())))
    assert changes(before, after) == Changes(("ServiceUuids",), ("Name", "TxPower", "Restored"))
    back = changes(after, before)
    assert back == Changes(("ServiceUuids", "Name", "TxPower", "Restored"), ())


def test_a_second_adapter_hearing_it_is_sources_and_its_reading_changes_it() -> None:
    one = sent_of(device(sources={"hci0": -60}))
    two = sent_of(device(sources={"hci0": -60, "hci1": -75}))
    assert changes(one, two) == Changes(("Sources",), ())
    assert changes(two, sent_of(device(sources={"hci0": -60, "hci1": -74}))).keys == ("Sources",)
    assert changes(two, one) == Changes((), ("Sources",))


def test_another_adapter_is_adapter_and_path() -> None:
    before = sent_of(device())
    after = sent_of(device(adapter="hci1", path="/org/bluez/hci1/dev_C0_11_22_33_44_55"))
    assert changes(before, after) == Changes(("Adapter", "Path"), ())


def test_keys_are_named_in_record_order() -> None:
    before = sent_of(device(rssi=None))
    after = sent_of(
        device(
            Content("x", 1, {1: b""}, {UUID: b""}, ()),
            rssi=-1,
            address_type="public",
            adapter="hci1",
            path="/p",
            first_seen=1.0,
            restored=True,
            last_seen=2.0,
            interval=3.0,
            sources={"hci0": -70, "hci1": -1},
        )
    )
    keys = changes(before, after).keys
    assert keys == tuple(k for k in RECORD_KEYS if k in keys)
    assert set(RECORD_KEYS) - set(keys) == {"Address"}


def unmarshal(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """What a client reads: one DevicesDiscovered, through dbus-fast's unmarshaller."""
    fields = header_fields(
        "a(sa{sv})", path="/Subscription/1", interface="x.y", member="DevicesDiscovered"
    )
    msg = wire_cost.unmarshal(message(MESSAGE_SIGNAL, 1, fields, body))
    return [(a, {k: v.value for k, v in r.items()}) for a, r in msg.body[0]]


def plain(record: dict[str, Variant]) -> dict[str, Any]:
    return {k: v.value for k, v in record.items()}


contents = st.builds(
    Content,
    st.none() | st.sampled_from(["A", "Sensor", "é"]),
    st.none() | st.integers(-127, 20),
    st.dictionaries(st.sampled_from([0x0499, 0x02E1]), st.binary(max_size=6), max_size=2),
    st.dictionaries(st.sampled_from([UUID]), st.binary(max_size=4), max_size=1),
    st.sampled_from([(), (UUID,)]),
)
states = st.fixed_dictionaries(
    {
        "content": contents,
        "rssi": st.none() | st.integers(-127, 20),
        "adapter": st.sampled_from(["hci0", "hci1"]),
        "restored": st.booleans(),
        "interval": st.none() | st.sampled_from([0.1, 1.5]),
        "last_seen": st.sampled_from([1.0, 2.0, 3.5]),
        # heard by one adapter (no Sources key) or by two, each with or without a reading
        "sources": st.dictionaries(
            st.sampled_from(["hci0", "hci1"]), st.none() | st.integers(-90, -40), max_size=2
        ),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(states, min_size=1, max_size=8))
def test_merging_each_changed_keys_item_rebuilds_the_full_record(
    sequence: list[dict[str, Any]],
) -> None:
    """The property clients rely on: first item full, then deltas; merged == full record."""
    held: dict[str, Any] | None = None
    last: Sent | None = None
    for state in sequence:
        d = device(**state)
        now = sent_of(d)
        item = record_entry(d) if last is None else changed_entry(d, changes(last, now))
        [(address, keys)] = unmarshal(snapshot_body([item]))
        assert address == ADDRESS
        if held is None:
            assert REMOVED not in keys
            held = dict(keys)
        else:
            for key in keys.pop(REMOVED, []):
                del held[key]
            held.update(keys)
        assert held == plain(record_variants(d))
        last = now
