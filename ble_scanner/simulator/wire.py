"""Hand-built D-Bus messages, and a writer that survives a full socket buffer.

BlueZ emits ``InterfacesAdded``/``InterfacesRemoved`` from ``/``, which
dbus-fast's ``bus.export`` cannot do, so the simulator builds its messages here.
"""

from __future__ import annotations

import logging
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.const import OBJECT_MANAGER, PROPERTIES

from .const import ErrorSpec

_LOG = logging.getLogger(__name__)


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


def method_call(
    destination: str, path: str, interface: str, member: str, signature: str = "", body: Any = None
) -> Message:
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )


def no_reply_call(
    destination: str, path: str, interface: str, member: str, signature: str = "", body: Any = None
) -> Message:
    """A call BlueZ makes without waiting (monitor callbacks are ``noreply``)."""
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
        flags=MessageFlag.NO_REPLY_EXPECTED,
        message_type=MessageType.METHOD_CALL,
    )


def harden_writer(bus: MessageBus) -> bool:
    """Make this connection's writer wait on EAGAIN instead of closing the bus.

    dbus-fast 2.x-5.x treat ``BlockingIOError`` from ``sock.send`` as fatal
    (python-dbus-next#153), which kills a simulator that bursts thousands of
    signals. The writer is replaced on this one instance only; returns False
    (and changes nothing) if dbus-fast's private layout is not the expected one.
    """
    writer = getattr(bus, "_writer", None)
    needed = ("messages", "sock", "loop", "fd", "buf", "offset", "fut", "bus")
    if writer is None or not all(hasattr(writer, name) for name in needed):
        return False

    def write_callback(remove_writer: bool = True) -> None:
        sock = writer.sock
        try:
            while True:
                if writer.buf is None:
                    if not writer.messages:
                        if remove_writer:
                            writer.loop.remove_writer(writer.fd)
                        return
                    buf, _fds, fut = writer.messages.popleft()
                    writer.buf = memoryview(buf)
                    writer.offset = 0
                    writer.fut = fut
                try:
                    writer.offset += sock.send(writer.buf[writer.offset :])
                except BlockingIOError:
                    writer.loop.add_writer(writer.fd, write_callback)
                    return
                if writer.offset < len(writer.buf):
                    writer.loop.add_writer(writer.fd, write_callback)
                    return
                writer.buf = None
                fut = writer.fut
                if fut is not None and not fut.done():
                    fut.set_result(None)
        except Exception as exc:
            fut = writer.fut
            if fut is not None and not fut.done():
                if writer.bus._user_disconnect:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
            writer.bus._finalize(exc)

    writer.write_callback = write_callback
    writer._write_without_remove_writer = lambda: write_callback(False)
    return True


def writer_backlog(bus: MessageBus) -> int:
    """Messages queued in dbus-fast's writer, not yet on the socket."""
    writer = getattr(bus, "_writer", None)
    messages = getattr(writer, "messages", None)
    return len(messages) if messages is not None else 0
