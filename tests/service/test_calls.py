"""bus/calls.py on a real dbus-daemon: every call ends in its body or one of three errors."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import (
    BusGoneError,
    CallError,
    add_match,
    call,
    call_bus,
    call_reply,
    method_call,
    name_owner,
    name_owner_rule,
    remove_match,
    signal_rule,
)
from ble_scanner.const import (
    BLUEZ_SERVICE,
    DBUS_SERVICE,
    ERROR_NAME_HAS_NO_OWNER,
    OBJECT_MANAGER,
)
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.conftest import connect, disconnect

# A name nobody on the test bus owns.
NOBODY: Final = "com.example.nobody"
# Deadline of a call that must end early; long enough for a busy machine's daemon.
TIMEOUT: Final = 5.0
# Deadline of a call that is meant to run out: short, so the test is quick.
SHORT: Final = 0.3
# How late past its deadline a timed-out call may end on a loaded machine.
SLACK: Final = 2.0
# How long the simulator holds the call that must time out: well past SHORT.
HOLD: Final = 10.0


async def test_a_reply_gives_its_body(bus: MessageBus) -> None:
    assert await call_bus(bus, "NameHasOwner", "s", [DBUS_SERVICE], timeout=TIMEOUT) == [True]
    assert await call_bus(bus, "NameHasOwner", "s", [NOBODY], timeout=TIMEOUT) == [False]


async def test_an_error_reply_is_a_call_error_with_its_name_and_text(bus: MessageBus) -> None:
    with pytest.raises(CallError) as caught:
        await call_bus(bus, "GetNameOwner", "s", [NOBODY], timeout=TIMEOUT)
    assert caught.value.name == ERROR_NAME_HAS_NO_OWNER
    assert caught.value.member == "GetNameOwner"
    assert NOBODY in caught.value.text
    assert str(caught.value).startswith(f"GetNameOwner: {ERROR_NAME_HAS_NO_OWNER}: ")


async def test_call_reply_hands_over_an_error_reply_as_it_came(bus: MessageBus) -> None:
    message = method_call(
        DBUS_SERVICE, "/org/freedesktop/DBus", DBUS_SERVICE, "GetNameOwner", "s", [NOBODY]
    )
    reply = await call_reply(bus, message, timeout=TIMEOUT)
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == ERROR_NAME_HAS_NO_OWNER


async def test_a_call_nobody_answers_times_out_at_its_deadline(
    bus: MessageBus, bluez: BluezSimulator
) -> None:
    bluez.set_reply_delay("GetManagedObjects", HOLD)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"GetManagedObjects: no answer within 0\.3 s"):
        await call(bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects", timeout=SHORT)
    elapsed = time.monotonic() - start
    assert SHORT <= elapsed < SHORT + SLACK, elapsed


async def test_a_call_on_a_closed_connection_is_bus_gone(test_bus: TestBus) -> None:
    connection = await connect(test_bus)
    await disconnect(connection)
    with pytest.raises(BusGoneError, match="NameHasOwner: not connected"):
        await call_bus(connection, "NameHasOwner", "s", [DBUS_SERVICE], timeout=TIMEOUT)


async def test_a_call_cut_off_by_a_disconnect_is_bus_gone_not_a_timeout(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    connection = await connect(test_bus)
    bluez.set_reply_delay("GetManagedObjects", HOLD)
    pending = asyncio.ensure_future(
        call(connection, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects", timeout=HOLD)
    )
    # The call is on its way once the bus daemon has answered one sent after it.
    await call_bus(connection, "NameHasOwner", "s", [BLUEZ_SERVICE], timeout=TIMEOUT)
    start = time.monotonic()
    connection.disconnect()
    with pytest.raises(BusGoneError):
        await pending
    assert time.monotonic() - start < SLACK
    await disconnect(connection)


async def test_name_owner_of_an_owned_and_an_unowned_name(
    bus: MessageBus, bluez: BluezSimulator
) -> None:
    assert await name_owner(bus, BLUEZ_SERVICE, timeout=TIMEOUT) == bluez.unique_name
    assert await name_owner(bus, NOBODY, timeout=TIMEOUT) is None


def test_signal_rule_spells_keys_in_a_fixed_order_and_skips_the_absent() -> None:
    assert signal_rule() == "type='signal'"
    assert signal_rule(
        arg0path="/org/bluez/", member="InterfacesAdded", sender="org.bluez", interface="x.Y"
    ) == (
        "type='signal',sender='org.bluez',interface='x.Y',member='InterfacesAdded',"
        "arg0path='/org/bluez/'"
    )
    assert name_owner_rule("org.bluez") == (
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
        "member='NameOwnerChanged',arg0='org.bluez'"
    )


async def test_the_bus_daemon_accepts_every_key_signal_rule_writes(bus: MessageBus) -> None:
    rule = signal_rule(
        sender=BLUEZ_SERVICE,
        interface="org.freedesktop.DBus.Properties",
        member="PropertiesChanged",
        path_namespace="/org/bluez",
        arg0="org.bluez.Device1",
    )
    other = signal_rule(path="/org/bluez/hci0", arg0path="/org/bluez/")
    for each in (rule, other, name_owner_rule(BLUEZ_SERVICE)):
        await add_match(bus, each, timeout=TIMEOUT)
        await remove_match(bus, each, timeout=TIMEOUT)
    # Removed means gone: a second removal is refused by name.
    with pytest.raises(CallError, match="MatchRuleNotFound"):
        await remove_match(bus, rule, timeout=TIMEOUT)


async def test_a_name_owner_rule_delivers_the_owner_change(test_bus: TestBus) -> None:
    listener = await connect(test_bus)
    changes: list[list[str]] = []
    got = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.member == "NameOwnerChanged":
            changes.append(list(msg.body))
            got.set()

    listener.add_message_handler(on_message)
    try:
        await add_match(listener, name_owner_rule(BLUEZ_SERVICE), timeout=TIMEOUT)
        simulator = BluezSimulator(bus_address=test_bus.address)
        await simulator.start()
        try:
            owner = simulator.unique_name
            await asyncio.wait_for(got.wait(), TIMEOUT)
        finally:
            await simulator.stop()
        assert changes[0][0] == BLUEZ_SERVICE and changes[0][2] == owner
    finally:
        await disconnect(listener)
