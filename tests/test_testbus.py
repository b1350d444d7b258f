"""The test bus behaves like a system bus: deny by default, policy from system.d."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from ble_scanner.testing.testbus import start_test_bus
from tests.helpers import assert_error, call


async def test_owning_an_unlisted_name_is_denied(bus: MessageBus) -> None:
    with pytest.raises(DBusError) as info:
        await bus.request_name("org.example.NotAllowed")
    assert info.value.type == "org.freedesktop.DBus.Error.AccessDenied"


async def test_root_may_own_bluez_name(bus: MessageBus) -> None:
    assert await bus.request_name("org.bluez") == RequestNameReply.PRIMARY_OWNER
    await bus.release_name("org.bluez")


async def test_method_call_to_unnamed_peer_is_denied(bus: MessageBus, test_bus: object) -> None:
    from tests.conftest import connect, disconnect

    other = await connect(test_bus)  # type: ignore[arg-type]
    try:
        reply = await call(bus, other.unique_name or "", "/", "org.example.X", "Y")
        assert_error(reply, "org.freedesktop.DBus.Error.AccessDenied")
    finally:
        await disconnect(other)


def test_bus_starts_and_stops_cleanly() -> None:
    import os

    bus = start_test_bus()
    directory = bus.directory
    assert bus.address.startswith("unix:path=")
    bus.stop()
    assert bus.process.returncode is not None
    assert not os.path.exists(directory)


async def test_bus_is_ready_when_started() -> None:
    with start_test_bus() as tb:
        connection = await asyncio.wait_for(MessageBus(bus_address=tb.address).connect(), 5)
        assert connection.unique_name
        connection.disconnect()
        await connection.wait_for_disconnect()


async def test_bus_restarts_at_the_same_address_and_old_connections_end() -> None:
    with start_test_bus(quiet=True) as tb:
        old_address, old_pid = tb.address, tb.process.pid
        before = await asyncio.wait_for(MessageBus(bus_address=tb.address).connect(), 5)
        tb.restart()
        assert tb.process.pid != old_pid and tb.process.poll() is None
        assert tb.address.split(",")[0] == old_address.split(",")[0]
        with pytest.raises(EOFError):
            await asyncio.wait_for(before.wait_for_disconnect(), 5)
        after = await asyncio.wait_for(MessageBus(bus_address=old_address).connect(), 5)
        assert after.unique_name
        after.disconnect()
        await after.wait_for_disconnect()
