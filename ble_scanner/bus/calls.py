"""Method calls, match rules and name owners on a dbus-fast connection, one way.

Every call has a deadline and ends in one of four ways a caller can tell apart:
the reply's body, :class:`CallError` (the peer answered with a D-Bus error;
``name`` is what to match on), ``TimeoutError`` (no answer in time), or
:class:`BusGoneError` (the connection to the bus is closed or broke). The
service's BlueZ side, its settings, the client proxy and fallback, and the
tests all call through here, so each translates these into its own terms at
its edge and none has a private call helper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from ..const import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    ERROR_NAME_HAS_NO_OWNER,
    ERROR_SERVICE_UNKNOWN,
)


class CallError(Exception):
    """The peer answered a call with a D-Bus error."""

    def __init__(self, member: str, name: str, text: str) -> None:
        super().__init__(f"{member}: {name}: {text}" if text else f"{member}: {name}")
        self.member = member
        self.name = name
        self.text = text


class BusGoneError(ConnectionError):
    """The connection to the bus is closed or broke: no call on it can succeed."""


def disconnect_reason(exc: BaseException | None) -> str:
    """Why a connection ended, in words for a log line or an error message.

    ``exc`` is what dbus-fast ended it with (``wait_for_disconnect()`` raises
    it), or a :class:`BusGoneError` from a call, or None for a clean close.
    """
    while isinstance(exc, BusGoneError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if exc is None or isinstance(exc, BusGoneError):
        return "the connection was closed"
    if isinstance(exc, EOFError):
        return "the bus daemon closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return f"the connection broke: {exc.strerror}"
    return str(exc) or type(exc).__name__


async def connection_lost(bus: MessageBus) -> str:
    """Wait until the connection ends; why, in words (:func:`disconnect_reason`).

    Never cancel the task awaiting this: that cancels dbus-fast's own
    disconnect future. The write that broke on the dead socket is marked as
    seen: dbus-fast's writer (2.21.1) and ours fail its future and never look
    at it, and asyncio would print its traceback when it is collected.
    """
    try:
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        ended: Exception | None = None
    except Exception as exc:  # how dbus-fast ends it: EOFError, OSError...
        ended = exc
    writer = getattr(bus, "_writer", None)
    failed = getattr(writer, "fut", None)
    if isinstance(failed, asyncio.Future) and failed.done() and not failed.cancelled():
        failed.exception()
    return disconnect_reason(ended)


def quiet_after_loss(loop: asyncio.AbstractEventLoop, lost: Callable[[], bool]) -> None:
    """Once ``lost()``, drop asyncio's reports of futures failed by the dead connection.

    A call in flight when the bus went gets the connection's error; if the task
    awaiting it is cancelled in the same moment (the process is stopping),
    nobody reads it, and asyncio prints "Future exception was never retrieved"
    with a traceback at exit. The one line saying the bus was lost says it all.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if "future" in context and isinstance(error, EOFError | OSError) and lost():
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def method_call(
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    flags: MessageFlag = MessageFlag.NONE,
) -> Message:
    """A method call to send (``flags``: NO_REPLY_EXPECTED for one nobody waits on)."""
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body if body is not None else [],
        flags=flags,
    )


async def call_reply(bus: MessageBus, message: Message, *, timeout: float) -> Message:
    """``message`` (a :func:`method_call`) sent with a deadline; the reply as it came,
    an error reply included.

    For callers that look at the error reply themselves (tests of error names)
    or need more of it than its body; everyone else wants :func:`call`.
    """
    member = message.member
    if not bus.connected:
        raise BusGoneError(f"{member}: not connected to the bus")
    try:
        reply = await asyncio.wait_for(bus.call(message), timeout)
    except TimeoutError:
        raise TimeoutError(f"{member}: no answer within {timeout:g} s") from None
    except (EOFError, OSError) as exc:
        # dbus-fast fails pending calls with these when the socket goes.
        raise BusGoneError(f"{member}: connection to the bus lost: {exc!r}") from exc
    if reply is None:
        # dbus-fast answers a pending call with None when its own connection is
        # disconnected (``bus.disconnect()``) before the reply came.
        raise BusGoneError(f"{member}: disconnected from the bus before the reply")
    return reply


def raise_for_error(reply: Message, member: str) -> Message:
    """``reply`` itself, or :class:`CallError` if it is an error reply.

    For callers that need more of the reply than its body (its sender).
    """
    if reply.message_type == MessageType.ERROR:
        text = str(reply.body[0]) if reply.body and isinstance(reply.body[0], str) else ""
        raise CallError(member, reply.error_name or "", text)
    return reply


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    timeout: float,
) -> list[Any]:
    """One call with a deadline; the reply's body, or :class:`CallError`."""
    message = method_call(destination, path, interface, member, signature, body)
    reply = await call_reply(bus, message, timeout=timeout)
    return list(raise_for_error(reply, member).body)


async def call_bus(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    timeout: float,
) -> list[Any]:
    """A call to the bus daemon itself (``org.freedesktop.DBus``)."""
    return await call(
        bus, DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, member, signature, body, timeout=timeout
    )


async def add_match(bus: MessageBus, rule: str, *, timeout: float) -> None:
    await call_bus(bus, "AddMatch", "s", [rule], timeout=timeout)


async def remove_match(bus: MessageBus, rule: str, *, timeout: float) -> None:
    await call_bus(bus, "RemoveMatch", "s", [rule], timeout=timeout)


async def name_owner(bus: MessageBus, name: str, *, timeout: float) -> str | None:
    """The unique name that owns ``name`` now, or None if nobody does."""
    try:
        (owner,) = await call_bus(bus, "GetNameOwner", "s", [name], timeout=timeout)
    except CallError as exc:
        if exc.name in (ERROR_NAME_HAS_NO_OWNER, ERROR_SERVICE_UNKNOWN):
            return None
        raise
    return str(owner)


def signal_rule(
    *,
    sender: str | None = None,
    interface: str | None = None,
    member: str | None = None,
    path: str | None = None,
    path_namespace: str | None = None,
    arg0: str | None = None,
    arg0path: str | None = None,
) -> str:
    """A match rule for signals (dbus-specification "Match Rules"), keys in a fixed order."""
    parts = ["type='signal'"]
    for key, value in (
        ("sender", sender),
        ("interface", interface),
        ("member", member),
        ("path", path),
        ("path_namespace", path_namespace),
        ("arg0", arg0),
        ("arg0path", arg0path),
    ):
        if value is not None:
            parts.append(f"{key}='{value}'")
    return ",".join(parts)


def name_owner_rule(name: str | None = None) -> str:
    """Signals telling when ``name`` (or any name) gains, changes or loses its owner;
    ``bus.owner`` reads them."""
    return signal_rule(
        sender=DBUS_SERVICE, interface=DBUS_INTERFACE, member="NameOwnerChanged", arg0=name
    )
