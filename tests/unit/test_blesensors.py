"""The dbus-ble-sensors datagram, byte by byte, read back by the port of its ble-socket.c; the plan."""

from __future__ import annotations

import pytest

from ble_scanner.testing.blesensors_socket import Receiver
from ble_scanner.venus.blesensors import (
    BLE_SENSORS_COMPANY_IDS,
    MAX_PACKET,
    NOT_TAKEN,
    BleSensorsSettings,
    FeedState,
    bdaddr,
    datagrams,
    handled,
    plan,
)

ADAPTER = "00:1A:7D:DA:71:10"
ADAPTER_LSB = bytes([0x10, 0x71, 0xDA, 0x7D, 0x1A, 0x00])


def build(address: str, rssi: int | None, mfr: dict[int, bytes], name: str | None) -> list[bytes]:
    return datagrams(
        bdaddr(ADAPTER),
        bdaddr(address),
        rssi,
        mfr,
        handled(mfr, BLE_SENSORS_COMPANY_IDS),
        name,
    )


def test_victron_instant_readout_every_byte() -> None:
    payload = bytes.fromhex("100289a30200b1a5e1c6b5")
    (packet,) = build("C8:A5:2C:11:22:33", -61, {0x02E1: payload}, None)
    assert packet == (
        bytes([2])  # version
        + ADAPTER_LSB  # the receiving adapter, least significant byte first
        + bytes([0x33, 0x22, 0x11, 0x2C, 0xA5, 0xC8])  # the advertiser, the same way
        + bytes([0xC3])  # -61 as int8
        + bytes([1 + 2 + len(payload), 0xFF, 0xE1, 0x02])  # AD: length, type, company LE
        + payload
    )
    receiver = Receiver()
    receiver.parse(packet)
    sensor = receiver.sensors["C8:A5:2C:11:22:33"]
    assert sensor.manufacturer_data == {0x02E1: payload}
    assert sensor.name is None


def test_ruuvi_every_byte_with_unknown_rssi() -> None:
    payload = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
    (packet,) = build("F4:11:22:33:44:55", None, {0x0499: payload}, None)
    assert packet[0] == 2
    assert packet[1:7] == ADAPTER_LSB
    assert packet[7:13] == bytes([0x55, 0x44, 0x33, 0x22, 0x11, 0xF4])
    assert packet[13] == 0x7F  # RSSI unknown
    assert packet[14:] == bytes([len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
    assert len(packet) == 14 + 4 + len(payload)
    receiver = Receiver()
    receiver.parse(packet)
    assert receiver.sensors["F4:11:22:33:44:55"].manufacturer_data == {0x0499: payload}


def test_named_device_every_byte_name_after_the_manufacturer_data() -> None:
    payload = bytes([0x0B, 0x01, 0x02])
    (packet,) = build("AA:BB:CC:DD:EE:01", -90, {0x0059: payload}, "M1015")
    assert packet == (
        bytes([2])
        + ADAPTER_LSB
        + bytes([0x01, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA])
        + bytes([256 - 90])
        + bytes([6, 0xFF, 0x59, 0x00, 0x0B, 0x01, 0x02])
        + bytes([6, 0x09])
        + b"M1015"
    )
    receiver = Receiver()
    receiver.parse(packet)
    sensor = receiver.sensors["AA:BB:CC:DD:EE:01"]
    assert sensor.name == "M1015"
    assert sensor.manufacturer_data == {0x0059: payload}


def test_apple_is_not_sent_and_only_handled_entries_are() -> None:
    assert build("11:22:33:44:55:66", -50, {0x004C: bytes(23)}, "iPhone") == []
    (packet,) = build("11:22:33:44:55:67", -50, {0x004C: bytes(5), 0x02E1: b"\x10"}, None)
    assert packet[14:] == bytes([4, 0xFF, 0xE1, 0x02, 0x10])


def test_31_byte_payload_with_a_long_name_fits_128_bytes() -> None:
    payload = bytes(range(31))
    name = "A very long device name that goes on and on and on, past any scan response limit"
    packets = build("AA:BB:CC:DD:EE:02", -70, {0x02E1: payload}, name)
    (packet,) = packets
    assert len(packet) <= MAX_PACKET
    assert packet[14:] == bytes([34, 0xFF, 0xE1, 0x02]) + payload  # the name went first
    receiver = Receiver()
    receiver.parse(packet)
    assert receiver.sensors["AA:BB:CC:DD:EE:02"].manufacturer_data == {0x02E1: payload}
    # With a shorter name both fit in one datagram.
    (short,) = build("AA:BB:CC:DD:EE:02", -70, {0x02E1: payload}, "SmartShunt HQ2")
    assert short.endswith(bytes([15, 0x09]) + b"SmartShunt HQ2")
    assert len(short) <= MAX_PACKET


def test_entries_that_do_not_fit_together_go_one_per_datagram() -> None:
    mfr = {0x02E1: bytes(60), 0x0499: bytes(60)}
    packets = build("AA:BB:CC:DD:EE:03", -70, mfr, "name")
    assert len(packets) == 2
    receiver = Receiver()
    for packet in packets:
        assert len(packet) <= MAX_PACKET
        receiver.parse(packet)
    assert receiver.sensors["AA:BB:CC:DD:EE:03"].manufacturer_data == mfr
    # An entry that cannot fit even alone is left out.
    assert build("AA:BB:CC:DD:EE:04", -70, {0x02E1: bytes(111)}, None) == []
    assert len(build("AA:BB:CC:DD:EE:04", -70, {0x02E1: bytes(110)}, None)[0]) == MAX_PACKET


def test_bdaddr_refuses_what_is_not_an_address() -> None:
    assert bdaddr("aa:bb:cc:dd:ee:ff") == bytes([0xFF, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA])
    for bad in ("", "AA:BB:CC:DD:EE", "AA:BB:CC:DD:EE:GG", "AABBCCDDEEFF"):
        with pytest.raises(ValueError):
            bdaddr(bad)


def test_receiver_reads_version_1_as_ble_socket_does() -> None:
    receiver = Receiver()
    addr = bytes([0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
    payload = b"\x05\x01\x02"
    packet = bytes([1, 0x01 | 0x02 | 0x04]) + addr + b"\x99\x04" + bytes([len(payload)])
    packet += payload + bytes([0xC4]) + bytes(6) + bytes([4]) + b"Ruuv"
    receiver.parse(packet)
    sensor = receiver.sensors["01:02:03:04:05:06"]
    assert sensor.manufacturer_data == {0x0499: payload}
    assert sensor.name == "Ruuv"
    # Too short, or cut off: nothing, as in ble-socket.c.
    other = Receiver()
    other.parse(bytes([1, 0]) + addr + b"\x99")
    other.parse(bytes([2]) + bytes(12))
    other.parse(bytes([1, 0]) + addr + b"\x99\x04" + bytes([9]) + b"\x01")
    assert other.sensors == {}


def test_receiver_reads_only_the_first_128_bytes_and_stops_at_a_bad_length() -> None:
    receiver = Receiver()
    head = bytes([2]) + bytes(6) + bytes([1, 2, 3, 4, 5, 6]) + bytes([0x7F])
    receiver.parse(head + bytes([0, 0xFF, 0xE1, 0x02, 1]))  # a zero length ends the parse
    receiver.parse(head + bytes([3, 0xFF, 0xE1, 0x02]))  # no payload byte: skipped
    assert receiver.sensors == {}
    long_entry = bytes([120, 0xFF, 0xE1, 0x02]) + bytes(117)  # runs past byte 128
    receiver.parse(head + long_entry)
    assert receiver.sensors == {}


# --- the plan -----------------------------------------------------------------------

FULL = BleSensorsSettings(port=18542, bind_address="127.0.0.1", bluetooth_enabled=1)


def test_plan_takes_over_while_feeding_and_restores_otherwise() -> None:
    feeding = plan(True, FULL, NOT_TAKEN)
    assert feeding.target == ("127.0.0.1", 18542)
    assert feeding.take_over and not feeding.restore
    assert feeding.text == "feeding 127.0.0.1:18542"
    taken = plan(True, FULL, 1)
    assert taken.target == ("127.0.0.1", 18542) and not taken.take_over
    off = plan(False, FULL, 1)
    assert off.state is FeedState.OFF and off.target is None and off.restore
    assert off.text == "off"
    assert not plan(False, FULL, NOT_TAKEN).restore


def test_plan_leaves_an_old_or_disabled_dbus_ble_sensors_alone() -> None:
    old = plan(True, BleSensorsSettings(bluetooth_enabled=1), NOT_TAKEN)
    assert old.text == "dbus-ble-sensors has no socket input"
    assert old.target is None and not old.take_over
    disabled = plan(True, BleSensorsSettings(18542, "", 1), NOT_TAKEN)
    assert disabled.text == "its socket is disabled"
    assert disabled.target is None and not disabled.take_over
    # Disabled after we took over: its scan comes back.
    assert plan(True, BleSensorsSettings(18542, "", 0), 1).restore
    for bad in (BleSensorsSettings(18542, "::1", 1), BleSensorsSettings(0, "127.0.0.1", 1)):
        assert plan(True, bad, NOT_TAKEN).state is FeedState.BAD_ADDRESS


def test_plan_without_localsettings_feeds_the_default_and_touches_nothing() -> None:
    alone = plan(True, None, NOT_TAKEN)
    assert alone.target == ("127.0.0.1", 18542) and not alone.take_over and not alone.restore
    assert not plan(False, None, 1).restore
    wildcard = plan(True, BleSensorsSettings(18600, "0.0.0.0", 1), NOT_TAKEN)
    assert wildcard.target == ("127.0.0.1", 18600)
    assert plan(True, BleSensorsSettings(18600, None, 1), NOT_TAKEN).target == (
        "127.0.0.1",
        18600,
    )
