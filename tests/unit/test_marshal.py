"""The hand-built Scanner1 messages are byte for byte what dbus-fast would send."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.bus.marshal import (
    MESSAGE_METHOD_RETURN,
    MESSAGE_SIGNAL,
    header_fields,
    message,
    snapshot_body,
    string_body,
)
from ble_scanner.bus.records import changed_entry, record_entry
from ble_scanner.bus.writer import (
    BROADCAST_BACKLOG_SHARE,
    WriterGuard,
    _BudgetQueue,
    split_messages,
)
from ble_scanner.const import RSSI_UNAVAILABLE
from ble_scanner.core.cache import Device, DeviceCache
from ble_scanner.core.delta import RECORD_KEYS, REMOVED, Changes
from ble_scanner.core.record import Content
from ble_scanner.core.sources import Source
from ble_scanner.service import record_variants

UUID = "0000181a-0000-1000-8000-00805f9b34fb"
CONTENTS = [
    Content(None, None, {}, {}, ()),
    Content("Sensor", -4, {0x02E1: bytes(range(20))}, {}, ()),
    Content("é ünïcode", None, {1: b"", 0xFFFF: b"\x01" * 31}, {UUID: b"\x02\x03"}, (UUID,)),
    Content("x" * 248, 20, {}, {UUID: b"", "0000fcd2" + UUID[8:]: b"\x40" * 13}, (UUID, "a" * 36)),
]


def device(
    content: Content,
    rssi: int | None,
    address: str = "C0:11:22:33:44:55",
    interval: float | None = None,
    restored: bool = False,
) -> Device:
    d = Device(address, 1_700_000_000.25, 12.0)
    d.learner.interval = interval
    d.restored = restored
    d.adapter = "hci0"
    d.address_type = "random"
    d.path = "/org/bluez/hci0/dev_" + address.replace(":", "_")
    d.content = content
    d.rssi = rssi
    d.last_seen = 1_700_000_123.5
    return d


def dbus_fast_bytes(msg: Message, serial: int) -> bytes:
    msg.serial = serial
    return bytes(msg._marshall(False))


DISCOVERED_FIELDS = header_fields(
    "sa{sv}", path="/", interface="com.victronenergy.ble.Scanner1", member="DeviceDiscovered"
)


def discovered_as_dbus_fast(d: Device) -> bytes:
    """The broadcast DeviceDiscovered of ``d`` as dbus-fast marshals it."""
    expected = Message.new_signal(
        "/", "com.victronenergy.ble.Scanner1", "DeviceDiscovered", "sa{sv}",
        [d.address, record_variants(d)],
    )  # fmt: skip
    return dbus_fast_bytes(expected, 7)


def discovered(d: Device) -> bytes:
    return message(MESSAGE_SIGNAL, 7, DISCOVERED_FIELDS, record_entry(d))


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("rssi", [None, -127, -60, 20])
@pytest.mark.parametrize("destination", [None, ":1.42"])
@pytest.mark.parametrize(("interval", "restored"), [(None, False), (1.25, False), (60.0, True)])
def test_device_discovered_is_what_dbus_fast_marshals(
    content: Content,
    rssi: int | None,
    destination: str | None,
    interval: float | None,
    restored: bool,
) -> None:
    d = device(content, rssi, interval=interval, restored=restored)
    expected = Message.new_signal(
        "/Subscription/7" if destination else "/",
        "com.victronenergy.ble.Scanner1",
        "DeviceDiscovered",
        "sa{sv}",
        [d.address, record_variants(d)],
    )
    expected.destination = destination
    fields = header_fields(
        "sa{sv}",
        path="/Subscription/7" if destination else "/",
        interface="com.victronenergy.ble.Scanner1",
        member="DeviceDiscovered",
        destination=destination,
    )
    ours = message(MESSAGE_SIGNAL, 99, fields, record_entry(d))
    assert ours == dbus_fast_bytes(expected, 99)
    # and again from the cached block
    assert message(MESSAGE_SIGNAL, 99, fields, record_entry(d)) == ours
    assert ("Interval" in expected.body[1]) == (interval is not None)
    assert ("Restored" in expected.body[1]) == restored


SOURCES = [
    {"hci0": -50},  # one adapter: no Sources key
    {"hci0": -50, "hci1": -71},
    {"hci0": -50, "hci1": None, "hci10": -127},  # a source with no reading: 127
    {"hci0": 20, "hci12": -1, "hci3": -99, "usb-dongle": -60},
]


@pytest.mark.parametrize("content", CONTENTS[:3])
@pytest.mark.parametrize("rssi", [None, -60])
@pytest.mark.parametrize("interval", [None, 1.25])
@pytest.mark.parametrize("sources", SOURCES)
def test_a_record_with_sources_is_what_dbus_fast_marshals(
    content: Content, rssi: int | None, interval: float | None, sources: dict[str, int | None]
) -> None:
    d = device(content, rssi, interval=interval)
    for adapter, reading in sources.items():
        source = d.sources[adapter] = Source(f"/org/bluez/{adapter}/dev_C0_11_22_33_44_55", 12.0)
        source.hear(reading, 12.0)
    expected = Message.new_signal(
        "/", "com.victronenergy.ble.Scanner1", "DeviceDiscovered", "sa{sv}",
        [d.address, record_variants(d)],
    )  # fmt: skip
    fields = header_fields(
        "sa{sv}", path="/", interface="com.victronenergy.ble.Scanner1", member="DeviceDiscovered"
    )
    assert message(MESSAGE_SIGNAL, 7, fields, record_entry(d)) == dbus_fast_bytes(expected, 7)
    told = {a: RSSI_UNAVAILABLE if r is None else r for a, r in sources.items()}
    record = expected.body[1]
    assert ("Sources" in record) == (len(told) > 1)
    if len(told) > 1:
        assert record["Sources"].value == told


@pytest.mark.parametrize("count", [0, 1, 3])
def test_snapshot_reply_is_what_dbus_fast_marshals(count: int) -> None:
    devices = [
        device(
            CONTENTS[i % len(CONTENTS)],
            -50 - i if i % 2 else None,
            f"C0:00:00:00:00:{i:02X}",
            interval=0.5 * i if i else None,
            restored=i == 2,
        )
        for i in range(count)
    ]
    call = Message(
        destination=":1.1", path="/", interface="x.y", member="GetDiscoveredDevices", serial=17
    )
    call.sender = ":1.9"
    expected = Message.new_method_return(
        call, "a{sa{sv}}", [{d.address: record_variants(d) for d in devices}]
    )
    fields = header_fields("a{sa{sv}}", reply_serial=17, destination=":1.9")
    ours = message(
        MESSAGE_METHOD_RETURN, 5, fields, snapshot_body(record_entry(d) for d in devices)
    )
    assert expected.message_type is MessageType.METHOD_RETURN
    assert ours == dbus_fast_bytes(expected, 5)


# Item key sets that end on each kind of entry: array, string, int16, double, bool, Removed.
CHANGED: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    ((), ()),
    (("ManufacturerData",), ()),
    (("ServiceUuids",), ()),
    (("Name",), ()),
    (("TxPower",), ()),
    (("Rssi",), ()),
    (("ManufacturerData", "LastSeen", "Rssi"), ()),
    (("ServiceData", "Adapter", "Path", "Interval"), ()),
    (("AddressType", "FirstSeen", "Restored"), ()),
    (("LastSeen",), ("Name",)),
    (("Rssi",), ("Name", "TxPower", "Restored")),
    ((), ("Interval",)),
]


@pytest.mark.parametrize(("keys", "removed"), CHANGED)
def test_devices_discovered_is_what_dbus_fast_marshals(
    keys: tuple[str, ...], removed: tuple[str, ...]
) -> None:
    """A full record and a changed-keys item in one DevicesDiscovered, byte for byte."""
    full = device(CONTENTS[1], -60, interval=1.25)
    changed = device(CONTENTS[3], -61, "C0:00:00:00:00:02", interval=0.5, restored=True)
    record = record_variants(changed)
    assert set(keys) <= set(record) and set(RECORD_KEYS) >= set(record)
    item = {key: record[key] for key in keys}
    if removed:
        item[REMOVED] = Variant("as", list(removed))
    expected = Message.new_signal(
        "/Subscription/3",
        "com.victronenergy.ble.Scanner1",
        "DevicesDiscovered",
        "a(sa{sv})",
        [[[full.address, record_variants(full)], [changed.address, item]]],
    )
    expected.destination = ":1.42"
    fields = header_fields(
        "a(sa{sv})",
        path="/Subscription/3",
        interface="com.victronenergy.ble.Scanner1",
        member="DevicesDiscovered",
        destination=":1.42",
    )
    body = snapshot_body([record_entry(full), changed_entry(changed, Changes(keys, removed))])
    assert message(MESSAGE_SIGNAL, 8, fields, body) == dbus_fast_bytes(expected, 8)


def test_device_lost_is_what_dbus_fast_marshals() -> None:
    expected = Message.new_signal(
        "/", "com.victronenergy.ble.Scanner1", "DeviceLost", "s", ["C0:11:22:33:44:55"]
    )
    fields = header_fields(
        "s", path="/", interface="com.victronenergy.ble.Scanner1", member="DeviceLost"
    )
    ours = message(MESSAGE_SIGNAL, 3, fields, string_body("C0:11:22:33:44:55"))
    assert ours == dbus_fast_bytes(expected, 3)


def test_the_writer_finds_each_message_and_sheds_only_device_discovered() -> None:
    """writer.split_messages reads what marshal and dbus-fast write, with marshal's constants."""
    d = device(CONTENTS[2], -60)
    discovered = message(
        MESSAGE_SIGNAL,
        7,
        header_fields("sa{sv}", path="/", interface="x.y", member="DeviceDiscovered"),
        record_entry(d),
    )
    lost = dbus_fast_bytes(Message.new_signal("/", "x.y", "DeviceLost", "s", [d.address]), 8)
    call = Message(
        destination=":1.1", path="/", interface="x.y", member="DeviceDiscovered", serial=3
    )
    call.sender = ":1.9"
    reply = dbus_fast_bytes(Message.new_method_return(call, "s", ["DeviceDiscovered"]), 9)
    unicast = message(
        MESSAGE_SIGNAL,
        10,
        header_fields(
            "sa{sv}",
            path="/Subscription/1",
            interface="x.y",
            member="DeviceDiscovered",
            destination=":1.7",
        ),
        record_entry(d),
    )
    data = discovered + lost + reply + discovered + unicast
    spans = list(split_messages(data))
    assert [(end - start, shed, to_one) for start, end, shed, to_one in spans] == [
        (len(discovered), True, False),
        (len(lost), False, False),
        (len(reply), False, True),
        (len(discovered), True, False),
        (len(unicast), True, True),
    ]
    assert spans[-1][1] == len(data)


def test_the_budget_sheds_the_broadcast_before_subscriptions() -> None:
    """Message by message: past its share of the budget a broadcast DeviceDiscovered
    goes, a subscription's only past all of it; other messages always stay."""
    d = device(CONTENTS[1], -60)

    def discovered(destination: str | None) -> bytes:
        path = "/" if destination is None else "/Subscription/1"
        fields = header_fields(
            "sa{sv}", path=path, interface="x.y", member="DeviceDiscovered", destination=destination
        )
        return message(MESSAGE_SIGNAL, 1, fields, record_entry(d))

    broadcast, unicast = discovered(None), discovered(":1.7")
    lost = dbus_fast_bytes(Message.new_signal("/", "x.y", "DeviceLost", "s", [d.address]), 8)
    pairs = 40
    budget = 10 * len(unicast)
    guard = WriterGuard(budget)
    queue = _BudgetQueue([], guard)
    # One loop iteration's signals in one buffer (bus/outbox.py), then a DeviceLost.
    queue.append(((broadcast + unicast) * pairs + lost, None, None))
    (kept,) = list(queue)
    spans = list(split_messages(bytes(kept[0])))
    kept_broadcast = sum(1 for _s, _e, shed, to_one in spans if shed and not to_one)
    kept_unicast = sum(1 for _s, _e, shed, to_one in spans if shed and to_one)
    assert not spans[-1][2]  # the DeviceLost is kept
    share, pair = int(budget * BROADCAST_BACKLOG_SHARE), len(broadcast) + len(unicast)
    # Broadcasts kept while the queue stays within the share, then unicasts to the top.
    assert kept_broadcast == (share - len(broadcast)) // pair + 1
    kept_bytes = kept_broadcast * len(broadcast) + kept_unicast * len(unicast)
    assert kept_bytes <= budget < kept_bytes + len(unicast)
    assert kept_unicast > kept_broadcast
    assert guard.shed == 2 * pairs - kept_broadcast - kept_unicast
    # The subscription's shed signals are counted for its path; the broadcast's only in all.
    assert guard.shed_by_path == {"/Subscription/1": pairs - kept_unicast}
    assert queue.nbytes <= budget + len(lost)


# Random records: every shape of content (arrays of 0 to 3 elements, payloads of
# every length mod 8, any text), identity and tail.
UUIDS = st.sampled_from([UUID, "0000fcd2" + UUID[8:], "0000feaa" + UUID[8:], "b" * 36, "fcd2", "é"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
ADAPTERS = st.sampled_from(["hci0", "hci1", "hci10", "usb-dongle"])
contents = st.builds(
    Content,
    st.none() | TEXT,
    st.none() | st.integers(-32768, 32767),
    st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=31), max_size=3),
    st.dictionaries(UUIDS, st.binary(max_size=27), max_size=3),
    st.lists(UUIDS, max_size=3, unique=True).map(tuple),
)
TIMES = st.floats(0, 2e9, allow_nan=False)
records = st.fixed_dictionaries(
    {
        "content": contents,
        # BlueZ's addresses are 17 bytes; any other length takes the general path
        "address": st.sampled_from(["C0:11:22:33:44:55", "D0:00:00:00:01:0F", "x", "é" * 9]),
        "address_type": st.sampled_from(["public", "random"]),
        "adapter": ADAPTERS,
        "path": st.sampled_from(
            ["/org/bluez/hci0/dev_C0_11_22_33_44_55", "/org/bluez/hci10/d", "/"]
        ),
        "first_seen": TIMES,
        "restored": st.booleans(),
        "last_seen": TIMES,
        "interval": st.none() | st.floats(0.001, 1e4),
        "rssi": st.none() | st.integers(-32768, 32767),
        "sources": st.dictionaries(ADAPTERS, st.none() | st.integers(-128, 20), max_size=3),
    }
)


def record_device(state: dict[str, Any]) -> Device:
    d = device(
        state["content"],
        state["rssi"],
        state["address"],
        interval=state["interval"],
        restored=state["restored"],
    )
    d.address_type, d.adapter, d.path = state["address_type"], state["adapter"], state["path"]
    d.first_seen, d.last_seen = state["first_seen"], state["last_seen"]
    for adapter, reading in state["sources"].items():
        source = d.sources[adapter] = Source(f"/org/bluez/{adapter}/dev_X", 12.0)
        source.hear(reading, 12.0)
    return d


@settings(max_examples=500)
@given(records)
def test_any_record_is_what_dbus_fast_marshals(state: dict[str, Any]) -> None:
    d = record_device(state)
    assert discovered(d) == discovered_as_dbus_fast(d)
    assert d.content_wire is not None and d.identity_wire is not None
    assert discovered(d) == discovered_as_dbus_fast(d)  # from the kept blocks


@settings(max_examples=300)
@given(records, st.data())
def test_any_changed_keys_item_is_what_dbus_fast_marshals(
    state: dict[str, Any], data: st.DataObject
) -> None:
    """Any keys the record has, any it has not named as removed, beside a full record."""
    d = record_device(state)
    record = record_variants(d)
    keys = tuple(k for k in RECORD_KEYS if k in record and data.draw(st.booleans()))
    removed = tuple(k for k in RECORD_KEYS if k not in record and data.draw(st.booleans()))
    item = {key: record[key] for key in keys}
    if removed:
        item[REMOVED] = Variant("as", list(removed))
    expected = Message.new_signal(
        "/Subscription/3", "com.victronenergy.ble.Scanner1", "DevicesDiscovered", "a(sa{sv})",
        [[[d.address, record], [d.address, item]]],
    )  # fmt: skip
    fields = header_fields(
        "a(sa{sv})", path="/Subscription/3", interface="com.victronenergy.ble.Scanner1",
        member="DevicesDiscovered",
    )  # fmt: skip
    body = snapshot_body([record_entry(d), changed_entry(d, Changes(keys, removed))])
    assert message(MESSAGE_SIGNAL, 8, fields, body) == dbus_fast_bytes(expected, 8)


# One report to the cache: which adapter heard it, the path it gave, its address
# type, RSSI and content; time moves on by ``later`` s.
reports = st.fixed_dictionaries(
    {
        "adapter": st.sampled_from(["hci0", "hci1"]),
        "address_type": st.sampled_from(["public", "random"]),
        "rssi": st.none() | st.integers(-100, -30),
        "content": st.sampled_from(CONTENTS) | contents,
        # any adapter's path: a change of either alone is seen
        "path": st.sampled_from(["/org/bluez/hci0/dev_C0_11_22_33_44_55", "/org/bluez/hci1/d"]),
        "later": st.sampled_from([0.0, 0.5, 3.0, 100.0]),
    }
)


@settings(max_examples=300)
@given(st.booleans(), st.lists(reports, min_size=1, max_size=12))
def test_the_blocks_kept_on_a_device_follow_every_change_the_cache_makes(
    restored: bool, sequence: list[dict[str, Any]]
) -> None:
    """Through ``DeviceCache`` as the hub uses it, encoding after every report: the
    kept blocks never outlive a change of content, address type, adapter, path or
    restored flag (the cache clears them; tests above show fresh blocks are right)."""
    cache = DeviceCache(lost_timeout=10.0, max_size=10)
    address = "C0:11:22:33:44:55"
    now, wall = 50.0, 1_700_000_000.0
    if restored:
        d = device(CONTENTS[1], -70, address)
        d.heard = d.since = now
        discovered(d)  # blocks kept from before, as restored changes
        cache.restore([d])
        assert discovered(d) == discovered_as_dbus_fast(d)
    for report in sequence:
        now += report["later"]
        wall += report["later"]
        d, *_ = cache.report(
            address, report["address_type"], report["adapter"], report["path"], report["rssi"],
            report["content"], wall, now,
        )  # fmt: skip
        assert discovered(d) == discovered_as_dbus_fast(d)
