"""Device1 property sets BlueZ would never send, for the service's robustness tests.

Real invalid UTF-8 cannot be sent: dbus-daemon validates every string and
disconnects a sender that tries, so ``odd_name`` uses the nastiest *valid*
text instead (BlueZ itself runs names through ``strtoutf8``).
"""

from __future__ import annotations

from collections.abc import Callable

from dbus_fast import Variant

from ble_scanner.const import BLUEZ_DEVICE

Props = dict[str, Variant]


def _base(address: str, adapter_path: str) -> Props:
    return {
        "Address": Variant("s", address),
        "AddressType": Variant("s", "public"),
        "Adapter": Variant("o", adapter_path),
        "RSSI": Variant("n", -60),
    }


def wrong_types(address: str, adapter_path: str) -> Props:
    """The python-dbusmock shapes (``aa{qv}``) and scalars of the wrong type."""
    props = _base(address, adapter_path)
    props["ManufacturerData"] = Variant("aa{qv}", [{0x02E1: Variant("ay", b"\x10")}])
    props["ServiceData"] = Variant("a{sv}", {"not-a-uuid": Variant("s", "text, not bytes")})
    props["RSSI"] = Variant("s", "-60")
    props["TxPower"] = Variant("u", 4)
    props["UUIDs"] = Variant("s", "0000180f-0000-1000-8000-00805f9b34fb")
    props["Name"] = Variant("ay", b"Name as bytes")
    return props


def oversized(address: str, adapter_path: str) -> Props:
    """Payloads far beyond any advertisement (64 KiB data, 100 000-character name)."""
    props = _base(address, adapter_path)
    props["ManufacturerData"] = Variant("a{qv}", {0xFFFF: Variant("ay", bytes(65536))})
    props["ServiceData"] = Variant(
        "a{sv}", {f"{i:08x}-0000-1000-8000-00805f9b34fb": Variant("ay", b"x") for i in range(500)}
    )
    props["UUIDs"] = Variant("as", [f"{i:08x}-0000-1000-8000-00805f9b34fb" for i in range(2000)])
    props["Name"] = Variant("s", "N" * 100_000)
    return props


def odd_name(address: str, adapter_path: str) -> Props:
    """Control characters, a replacement character, RTL override and astral code points."""
    props = _base(address, adapter_path)
    props["Name"] = Variant("s", "\x01\x1b[31mbad\ufffd\u202e\U0001f4a9\x7f")
    props["Alias"] = Variant("s", "\ufffd" * 3)
    return props


def missing_address(address: str, adapter_path: str) -> Props:
    """No Address and no AddressType: the path is the only identity."""
    props = _base(address, adapter_path)
    del props["Address"]
    del props["AddressType"]
    return props


def bad_values(address: str, adapter_path: str) -> Props:
    """Right types, impossible values: RSSI +500, address not an address."""
    props = _base("ZZ:not:an:address", adapter_path)
    props["RSSI"] = Variant("n", 500)
    props["TxPower"] = Variant("n", -32768)
    props["AddressType"] = Variant("s", "martian")
    return props


SAMPLES: dict[str, Callable[[str, str], Props]] = {
    "wrong_types": wrong_types,
    "oversized": oversized,
    "odd_name": odd_name,
    "missing_address": missing_address,
    "bad_values": bad_values,
}


def device_interfaces(props: Props) -> dict[str, Props]:
    return {BLUEZ_DEVICE: props}
