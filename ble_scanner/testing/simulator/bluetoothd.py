"""bluetoothd's connection to the bus: owning ``org.bluez``, and leaving it (an exit or a crash).

What a client sees of the process itself (``src/main.c``): the name taken
with DO_NOT_QUEUE, the objects published before or after it, and on exit
either monitors released and InterfacesRemoved sent first (a clean exit) or
the connection simply dropped (a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply

from ble_scanner.bus.calls import name_owner_rule
from ble_scanner.const import BLUEZ_SERVICE, DBUS_INTERFACE, DBUS_PATH, DBUS_SERVICE

from . import wire
from .adapter import Adapter
from .objects import CallRecord, ObjectServer
from .raw import BluezRoot

# Connecting and owning the name take milliseconds; this bounds a dead bus.
CONNECT_TIMEOUT = 5.0


class SimulatorError(RuntimeError):
    """The simulator could not start (bus unreachable, org.bluez already owned)."""


async def connect(
    bus_address: str | None,
    log: list[CallRecord],
    delays: dict[tuple[str | None, str], float],
    sender_gone: Callable[[str], None],
) -> ObjectServer:
    """A connection serving BlueZ's root objects and following clients leaving the bus;
    ``org.bluez`` is not taken yet (``take_name``)."""
    bus = MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM)
    try:
        await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT)
    except Exception as exc:
        raise SimulatorError(f"cannot connect to the system bus: {exc}") from exc
    wire.harden_writer(bus)
    server = ObjectServer(bus, log, delays)
    server.sender_gone.append(sender_gone)
    server.add(BluezRoot(), announce=False)
    await bus.call(
        wire.method_call(
            DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [name_owner_rule()]
        )
    )
    return server


async def take_name(bus: MessageBus) -> None:
    """Own ``org.bluez``; if we cannot, the connection is closed and SimulatorError says why."""
    try:
        reply = await asyncio.wait_for(
            bus.request_name(BLUEZ_SERVICE, NameFlag.DO_NOT_QUEUE), CONNECT_TIMEOUT
        )
    except Exception as exc:
        bus.disconnect()
        raise SimulatorError(f"cannot own {BLUEZ_SERVICE}: {exc}") from exc
    if reply is not RequestNameReply.PRIMARY_OWNER:
        bus.disconnect()
        raise SimulatorError(f"{BLUEZ_SERVICE} is already owned ({reply.name})")


async def leave(server: ObjectServer, adapters: Iterable[Adapter], graceful: bool) -> None:
    """bluetoothd exits (``graceful``: monitors released, objects removed first) or crashes."""
    if graceful:
        for adapter in adapters:
            adapter.shutdown(release_monitors=True)
        server.flush()
        # A dead bus never completes what was queued for it: do not wait on it.
        if server.bus.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.drain(), CONNECT_TIMEOUT)
    else:
        for adapter in adapters:
            adapter.abandon()
    server.close()
    bus = server.bus
    if bus.connected:
        if graceful:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.release_name(BLUEZ_SERVICE), CONNECT_TIMEOUT)
        bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.wait_for_disconnect(), CONNECT_TIMEOUT)  # type: ignore[no-untyped-call,unused-ignore]
