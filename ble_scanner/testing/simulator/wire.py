"""Hand-built D-Bus messages; method calls and the EAGAIN-proof writer come from
``ble_scanner.bus``.

BlueZ emits ``InterfacesAdded``/``InterfacesRemoved`` from ``/``, which
dbus-fast's ``bus.export`` cannot do, so the simulator builds its messages here.
"""

from __future__ import annotations

import logging
from typing import Any

from dbus_fast import Message, MessageFlag, Variant

from ble_scanner.bus.calls import method_call
from ble_scanner.bus.writer import harden_writer, writer_backlog
from ble_scanner.const import OBJECT_MANAGER, PROPERTIES

from .const import ErrorSpec

_LOG = logging.getLogger(__name__)

__all__ = [
    "error",
    "harden_writer",
    "interfaces_added",
    "interfaces_removed",
    "method_call",
    "no_reply_call",
    "properties_changed",
    "writer_backlog",
]


def error(msg: Message, spec: ErrorSpec) -> Message:
    return Message.new_error(msg, spec[0], spec[1])


def properties_changed(
    path: str, interface: str, changed: dict[str, Variant], invalidated: list[str]
) -> Message:
    return Message.new_signal(
        path, PROPERTIES, "PropertiesChanged", "sa{sv}as", [interface, changed, invalidated]
    )


def interfaces_added(path: str, interfaces: dict[str, dict[str, Variant]]) -> Message:
    return Message.new_signal(
        "/", OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}", [path, interfaces]
    )


def interfaces_removed(path: str, interfaces: list[str]) -> Message:
    return Message.new_signal("/", OBJECT_MANAGER, "InterfacesRemoved", "oas", [path, interfaces])


def no_reply_call(
    destination: str, path: str, interface: str, member: str, signature: str = "", body: Any = None
) -> Message:
    """A call BlueZ makes without waiting (monitor callbacks are ``noreply``)."""
    return method_call(
        destination, path, interface, member, signature, body, MessageFlag.NO_REPLY_EXPECTED
    )
