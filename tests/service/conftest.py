"""Helpers for talking to the service the way any client would: raw D-Bus calls."""

from __future__ import annotations

from typing import Any

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE
from tests.helpers import add_match, scanner_call


async def get_devices(bus: MessageBus, **flt: Variant) -> dict[str, dict[str, Variant]]:
    reply = await scanner_call(bus, "GetDiscoveredDevices", "a{sv}", [flt])
    assert reply.error_name is None, reply.body
    devices: dict[str, dict[str, Variant]] = reply.body[0]
    return devices


async def watch_broadcast(bus: MessageBus) -> None:
    await add_match(bus, signal_rule(sender=SCANNER_SERVICE, interface=SCANNER_INTERFACE, path="/"))


def body_of(messages: list[Message], member: str, path: str | None = None) -> list[list[Any]]:
    return [m.body for m in messages if m.member == member and (path is None or m.path == path)]
