"""bus/outbox.py: our signals reach a listener in order, and while the management
channel hands on one wake-up's frames they are held and then written in one go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ble_scanner.bus.marshal import MESSAGE_SIGNAL, header_fields, string_body
from ble_scanner.bus.outbox import Outbox
from ble_scanner.testing.testbus import TestBus
from tests.conftest import connect, disconnect
from tests.helpers import add_match, wait_until

PATH, INTERFACE, MEMBER = "/test/outbox", "test.Outbox", "Said"


@pytest_asyncio.fixture
async def heard(test_bus: TestBus) -> AsyncIterator[list[str]]:
    """What a second connection hears of our signals, in order."""
    listener = await connect(test_bus)
    texts: list[str] = []

    def on_message(message: Message) -> None:
        if message.message_type is MessageType.SIGNAL and message.member == MEMBER:
            texts.append(message.body[0])

    listener.add_message_handler(on_message)
    try:
        await add_match(listener, f"type='signal',interface='{INTERFACE}'")
        yield texts
    finally:
        await disconnect(listener)


def say(outbox: Outbox, text: str) -> None:
    fields = header_fields("s", path=PATH, interface=INTERFACE, member=MEMBER)
    outbox.send(MESSAGE_SIGNAL, fields, string_body(text))


async def test_a_lone_message_is_written_at_once_the_rest_at_the_end_of_the_iteration(
    bus: MessageBus, heard: list[str]
) -> None:
    outbox = Outbox(bus)
    say(outbox, "one")
    assert len(outbox) == 0  # written without waiting for the loop
    say(outbox, "two")
    say(outbox, "three")
    assert len(outbox) == 2  # the rest of the iteration's burst waits ...
    await asyncio.sleep(0)  # the end of this loop iteration is what is tested
    assert len(outbox) == 0  # ... and goes out at its end
    await wait_until(lambda: len(heard) == 3, what="three signals")
    assert heard == ["one", "two", "three"]


async def test_held_messages_wait_for_release_and_go_out_then_in_order(
    bus: MessageBus, heard: list[str]
) -> None:
    outbox = Outbox(bus)
    flushes: list[int] = []
    outbox.before_flush = lambda: flushes.append(len(outbox))
    outbox.hold()
    for text in ("a", "b", "c"):
        say(outbox, text)
    assert len(outbox) == 3 and not flushes  # nothing written while held
    outbox.release()
    assert len(outbox) == 0 and flushes == [3]  # one flush, at release, synchronously
    await wait_until(lambda: len(heard) == 3, what="three signals")
    assert heard == ["a", "b", "c"]
    # Released, the outbox is back to writing a lone message at once.
    say(outbox, "d")
    assert len(outbox) == 0
    await wait_until(lambda: heard[-1:] == ["d"], what="the fourth signal")
