"""What a client pays to unmarshal each encoding a subscription could get, per report.

    .venv/bin/python -m tests.wire_cost          # dbus-fast of this venv
    .venv-venus/bin/python -m tests.wire_cost    # dbus-fast 2.21.1, as on Venus OS

Messages are built by the service's own marshalling (ble_scanner/bus/marshal.py)
and read by dbus-fast's ``Unmarshaller``, which is what a dbus-fast client runs
on every message; the socket, the wake-up and the dispatch are not counted
(they are per message, so batching divides them too). docs/dbus-api.md
"DevicesDiscovered" gives the figures and the choice they support.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Final

from dbus_fast import Message
from dbus_fast._private.unmarshaller import Unmarshaller

from ble_scanner.bus.marshal import (
    MESSAGE_SIGNAL,
    header_fields,
    message,
    snapshot_body,
)
from ble_scanner.bus.records import changed_entry, record_entry
from ble_scanner.core.cache import Device
from ble_scanner.core.delta import changes, sent_of
from ble_scanner.core.record import Content

# Items per batched signal: a wake-up's reports for one subscriber at a busy site.
ITEMS: Final = 20
# A Ruuvi-like sensor's record: name, a 24-byte payload, a service UUID, interval.
PAYLOAD: Final = bytes(range(24))
UUID: Final = "0000181a-0000-1000-8000-00805f9b34fb"
# Short rounds, the best one kept: on a shared machine the quiet moments are the truth.
REPEATS: Final = 40


def _device(i: int, counter: int) -> Device:
    d = Device(f"C0:11:22:33:44:{i:02X}", 1_700_000_000.0, 0.0)
    d.adapter, d.address_type = "hci0", "random"
    d.path = f"/org/bluez/hci0/dev_C0_11_22_33_44_{i:02X}"
    d.content = Content(
        f"Ruuvi {i:04X}", None, {0x0499: counter.to_bytes(4, "little") + PAYLOAD}, {}, (UUID,)
    )
    d.rssi, d.last_seen = -60 - counter % 10, 1_700_000_000.0 + counter
    d.learner.interval = 1.0
    return d


def _signal(signature: str, member: str, body: bytes) -> bytes:
    fields = header_fields(
        signature,
        path="/Subscription/1",
        interface="com.victronenergy.ble.Scanner1",
        member=member,
        destination=":1.7",
    )
    return message(MESSAGE_SIGNAL, 1, fields, body)


_PLAIN_HEAD: Final = struct.Struct("<I")


def _plain_item(d: Device) -> bytes:
    """``(sa{qay}dn)``: address, manufacturer data, LastSeen, Rssi: a fixed struct."""
    address = d.address.encode()
    out = bytearray(_PLAIN_HEAD.pack(len(address)) + address + b"\0")
    out += bytes(-len(out) % 4)
    assert d.content is not None
    entries = bytearray()
    for company, payload in d.content.manufacturer_data.items():
        entries += bytes(-len(entries) % 8)
        entries += struct.pack("<H2xI", company, len(payload)) + payload
    out += _PLAIN_HEAD.pack(len(entries))
    out += bytes(-len(out) % 8)
    out += entries
    out += bytes(-len(out) % 8)
    out += struct.pack("<d", d.last_seen)
    out += struct.pack("<h", d.rssi or 0)
    return bytes(out)


def encodings() -> dict[str, tuple[bytes, int]]:
    """Each encoding's message and the reports it carries."""
    before = [_device(i, 0) for i in range(ITEMS)]
    after = [_device(i, 1) for i in range(ITEMS)]
    full = [record_entry(d) for d in after]
    changed = [
        changed_entry(a, changes(sent_of(b), sent_of(a)))
        for b, a in zip(before, after, strict=True)
    ]
    plain = [_plain_item(d) for d in after]
    return {
        "DeviceDiscovered sa{sv}, one full record": (
            _signal("sa{sv}", "DeviceDiscovered", full[0]),
            1,
        ),
        f"DevicesDiscovered a(sa{{sv}}), {ITEMS} full records": (
            _signal("a(sa{sv})", "DevicesDiscovered", snapshot_body(full)),
            ITEMS,
        ),
        f"DevicesDiscovered a(sa{{sv}}), {ITEMS} changed-keys items": (
            _signal("a(sa{sv})", "DevicesDiscovered", snapshot_body(changed)),
            ITEMS,
        ),
        f"a(sa{{qay}}dn), {ITEMS} plain structs (not self-describing)": (
            _signal("a(sa{qay}dn)", "DevicesDiscovered", snapshot_body(plain)),
            ITEMS,
        ),
    }


def unmarshal(data: bytes) -> Message:
    msg = Unmarshaller(io.BytesIO(data)).unmarshall()  # type: ignore[arg-type]
    assert isinstance(msg, Message)
    return msg


def per_report(data: bytes, reports: int, seconds: float = 1.0) -> float:
    """µs to unmarshal ``data``, divided by the reports it carries (best of REPEATS)."""
    run: Callable[[bytes], Any] = unmarshal
    best = float("inf")
    for _ in range(REPEATS):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / REPEATS:
            run(data)
            count += 1
        best = min(best, elapsed / count)
    return best / reports * 1e6


def main() -> None:
    print(f"dbus-fast {version('dbus-fast')}: unmarshalling, µs per report")
    for name, (data, reports) in encodings().items():
        print(f"  {per_report(data, reports):6.2f}  {name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
