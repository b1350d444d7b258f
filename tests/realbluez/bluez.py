"""Raw D-Bus helpers for scenario tests against org.bluez (real or simulated)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.helpers import assert_ok, call
from tests.realbluez.backends import Advert, Backend

BLUEZ = "org.bluez"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
MONITOR_MANAGER = "org.bluez.AdvertisementMonitorManager1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"

# The filter the service sets: LE only, and no duplicate suppression so every
# report reaches D-Bus (BlueZ src/adapter.c ``filter_duplicate_data``).
SCAN_FILTER = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}

# btvirt reports only when advertising or scanning is switched on (2-4 reports
# per 10 s) and the kernel sometimes drops the first: re-advertise this often.
READVERTISE_EVERY = 2.0
# First Device1 came 0.2-5 s after the advertisement in the measurements; TCG
# on a shared 2-core machine can be several times slower.
DEVICE_TIMEOUT = 30.0
# One call to bluetoothd in the guest: milliseconds when idle, but a Get took
# over 5 s (the helpers' default) under TCG at a load average of 9.
GUEST_CALL_TIMEOUT = 20.0

Objects = dict[str, dict[str, dict[str, Variant]]]


async def managed_objects(bus: MessageBus) -> Objects:
    reply = await call(
        bus, BLUEZ, "/", OBJECT_MANAGER, "GetManagedObjects", timeout=GUEST_CALL_TIMEOUT
    )
    objects: Objects = assert_ok(reply)[0]
    return objects


async def devices(bus: MessageBus, adapter: str = "hci0") -> dict[str, dict[str, Variant]]:
    """Device1 properties by object path, for devices under ``adapter``."""
    prefix = f"/org/bluez/{adapter}/dev_"
    return {
        path: ifaces[DEVICE]
        for path, ifaces in (await managed_objects(bus)).items()
        if path.startswith(prefix) and DEVICE in ifaces
    }


async def adapter_call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    adapter: str = "hci0",
    timeout: float = 10.0,
) -> Message:
    return await call(
        bus, BLUEZ, f"/org/bluez/{adapter}", ADAPTER, member, signature, body, timeout=timeout
    )


async def get_property(bus: MessageBus, path: str, interface: str, name: str) -> Any:
    reply = await call(
        bus, BLUEZ, path, PROPERTIES, "Get", "ss", [interface, name], timeout=GUEST_CALL_TIMEOUT
    )
    return assert_ok(reply)[0].value


async def set_property(
    bus: MessageBus, path: str, interface: str, name: str, value: Variant
) -> None:
    reply = await call(bus, BLUEZ, path, PROPERTIES, "Set", "ssv", [interface, name, value], 15)
    assert_ok(reply)


async def discovering(bus: MessageBus, adapter: str = "hci0") -> bool:
    return bool(await get_property(bus, f"/org/bluez/{adapter}", ADAPTER, "Discovering"))


async def start_scan(bus: MessageBus, adapter: str = "hci0") -> None:
    """Our filter, then StartDiscovery, both must succeed."""
    assert_ok(await adapter_call(bus, "SetDiscoveryFilter", "a{sv}", [SCAN_FILTER], adapter))
    assert_ok(await adapter_call(bus, "StartDiscovery", adapter=adapter))


async def remove_all_devices(bus: MessageBus, adapter: str = "hci0") -> None:
    for path in await devices(bus, adapter):
        reply = await adapter_call(bus, "RemoveDevice", "o", [path], adapter)
        if reply.message_type == MessageType.ERROR:
            assert reply.error_name == "org.bluez.Error.DoesNotExist", reply.body


async def wait_for_device(
    backend: Backend,
    bus: MessageBus,
    advert: Advert,
    predicate: Callable[[dict[str, Variant]], bool],
    *,
    connectable: bool = True,
    timeout: float = DEVICE_TIMEOUT,
    adapter: str = "hci0",
) -> tuple[str, dict[str, Variant]]:
    """Advertise ``advert`` until a Device1 under ``adapter`` satisfies ``predicate``.

    Re-advertising is how the virtual radio produces reports; against the
    simulator it is just another report.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Variant]] = {}
    while True:
        await backend.advertise(advert, connectable=connectable)
        until = min(deadline, time.monotonic() + READVERTISE_EVERY)
        while True:
            last = await devices(bus, adapter)
            for path, props in last.items():
                if predicate(props):
                    return path, props
            if time.monotonic() >= until:
                break
            await asyncio.sleep(0.1)
        if time.monotonic() >= deadline:
            shown = {p: {k: v.value for k, v in d.items()} for p, d in last.items()}
            raise AssertionError(f"no matching Device1 within {timeout} s; devices: {shown}")


def manufacturer_is(company: int, payload: bytes) -> Callable[[dict[str, Variant]], bool]:
    def match(props: dict[str, Variant]) -> bool:
        data = props.get("ManufacturerData")
        return data is not None and company in data.value and data.value[company].value == payload

    return match
