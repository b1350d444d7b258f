"""The bluetoothd side of the bus: object registry, dispatch and signal coalescing.

Works on dbus-fast's low-level API only: one message handler answers every
call to ``org.bluez`` (Properties, ObjectManager at ``/``, Introspect and the
BlueZ methods), and property changes made in one main-loop iteration go out as
one PropertiesChanged per object and interface, as gdbus does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.owner import connection_left, owner_change
from ble_scanner.const import (
    ERROR_INVALID_ARGS,
    ERROR_UNKNOWN_METHOD,
    ERROR_UNKNOWN_OBJECT,
    INTROSPECTABLE,
    OBJECT_MANAGER,
    PEER,
    PROPERTIES,
)

from . import wire
from .introspection import node_xml
from .names import ERROR_UNKNOWN_PROPERTY, STANDARD_INTERFACES

# A handler's answer: a reply to send now, True when it will reply later, or
# None when it does not know the member (UnknownMethod follows).
Outcome = Message | bool | None


class SimObject(Protocol):
    """What the server needs from an object it publishes."""

    path: str

    def interface_names(self) -> list[str]: ...

    def get_all(self, interface: str) -> dict[str, Variant] | None: ...

    def get(self, interface: str, name: str) -> Variant | None: ...

    def set_property(self, interface: str, name: str, value: Variant, msg: Message) -> Outcome: ...

    def call(self, interface: str, member: str, msg: Message) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One method call received, for tests that assert what a client asked for."""

    member: str
    interface: str
    path: str
    sender: str
    time: float


class ObjectServer:
    """Publishes ``SimObject``s on one connection; replaced wholesale on a restart."""

    def __init__(
        self,
        bus: MessageBus,
        log: list[CallRecord] | None = None,
        reply_delays: dict[tuple[str | None, str], float] | None = None,
    ) -> None:
        self.bus = bus
        self.loop = asyncio.get_running_loop()
        self.objects: dict[str, SimObject] = {}
        # Shared with the simulator so they outlive a bluetoothd restart.
        self.log: list[CallRecord] = log if log is not None else []
        self.reply_delays = reply_delays if reply_delays is not None else {}
        self.sender_gone: list[Callable[[str], None]] = []
        self.signal_hooks: list[Callable[[Message], None]] = []
        # Run once, right after the next GetManagedObjects reply is sent.
        self.after_managed_objects: list[Callable[[], None]] = []
        self._pending: dict[tuple[str, str], set[str]] = {}
        self._removed: list[tuple[str, list[str]]] = []
        self._flush_scheduled = False
        self._last_send: asyncio.Future[None] | None = None
        self._closed = False
        bus.add_message_handler(self._on_message)

    # --- sending ------------------------------------------------------------

    def send(self, msg: Message) -> None:
        if self._closed or not self.bus.connected:
            return
        self._last_send = self.bus.send(msg)

    async def drain(self) -> None:
        """Wait until everything sent so far has been written to the socket."""
        fut = self._last_send
        if fut is not None and not fut.done():
            try:
                await fut
            except Exception:
                pass

    def backlog(self) -> int:
        return wire.writer_backlog(self.bus)

    def close(self) -> None:
        self._closed = True
        self.bus.remove_message_handler(self._on_message)

    # --- objects and signals -----------------------------------------------

    def add(self, obj: SimObject, announce: bool = True) -> None:
        self.objects[obj.path] = obj
        if announce:
            self.send(wire.interfaces_added(obj.path, self.interfaces_of(obj)))

    def remove(self, path: str) -> None:
        """Unpublish now; InterfacesRemoved goes out with this iteration's changes."""
        obj = self.objects.pop(path, None)
        if obj is None:
            return
        names = [STANDARD_INTERFACES[0], *obj.interface_names(), STANDARD_INTERFACES[1]]
        self._removed.append((path, names))
        self._schedule_flush()

    def add_interfaces(self, path: str, names: list[str]) -> None:
        """An object already published gained interfaces: InterfacesAdded with just those."""
        obj = self.objects.get(path)
        if obj is not None and names:
            self.send(wire.interfaces_added(path, {n: obj.get_all(n) or {} for n in names}))

    def remove_interfaces(self, path: str, names: list[str]) -> None:
        """An object lost interfaces but stays: InterfacesRemoved with just those."""
        if path in self.objects and names:
            self._removed.append((path, names))
            self._schedule_flush()

    def interfaces_of(self, obj: SimObject) -> dict[str, dict[str, Variant]]:
        out: dict[str, dict[str, Variant]] = {STANDARD_INTERFACES[0]: {}}
        for name in obj.interface_names():
            out[name] = obj.get_all(name) or {}
        out[STANDARD_INTERFACES[1]] = {}
        return out

    def changed(self, path: str, interface: str, names: list[str] | tuple[str, ...]) -> None:
        """Queue PropertiesChanged; all changes of this iteration are sent together."""
        if not names:
            return
        key = (path, interface)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = set(names)
        else:
            pending.update(names)
        self._schedule_flush()

    def emit_now(self, obj: SimObject, interface: str, names: list[str]) -> None:
        """Send one PropertiesChanged at once, folding in anything queued for it."""
        pending = self._pending.pop((obj.path, interface), None)
        if pending:
            names = names + [n for n in pending if n not in names]
        self._send_changes(obj, interface, names)

    def _send_changes(self, obj: SimObject, interface: str, names: list[str]) -> None:
        get = obj.get
        changed: dict[str, Variant] = {}
        invalidated: list[str] = []
        for name in names:
            value = get(interface, name)
            if value is None:
                invalidated.append(name)
            else:
                changed[name] = value
        self.send(wire.properties_changed(obj.path, interface, changed, invalidated))

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """gdbus ``process_changes``: property changes first, then removals."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        removed, self._removed = self._removed, []
        # Whole objects (their removal lists the standard interfaces too), not
        # an interface dropped from an object that stays.
        gone = {path for path, names in removed if STANDARD_INTERFACES[0] in names}
        for (path, interface), names in pending.items():
            obj = self.objects.get(path)
            if obj is None or path in gone:
                continue
            ordered = [n for n in _ordered(obj, interface) if n in names]
            ordered += sorted(names.difference(ordered))
            self._send_changes(obj, interface, ordered)
        for path, interfaces in removed:
            self.send(wire.interfaces_removed(path, interfaces))

    # --- dispatch -----------------------------------------------------------

    def _on_message(self, msg: Message) -> Message | bool:
        mtype = msg.message_type
        if mtype is MessageType.SIGNAL:
            self._on_signal(msg)
            return False
        if mtype is not MessageType.METHOD_CALL or self._closed:
            return False
        member = msg.member or ""
        self.log.append(
            CallRecord(member, msg.interface or "", msg.path or "", msg.sender or "", time.time())
        )
        delay = self.reply_delays.get((msg.path, member), self.reply_delays.get((None, member)))
        if delay:
            self.loop.call_later(delay, self._dispatch_later, msg)
            return True
        return self._dispatch(msg)

    def _dispatch_later(self, msg: Message) -> None:
        outcome = self._dispatch(msg)
        if isinstance(outcome, Message):
            self.send(outcome)

    def _dispatch(self, msg: Message) -> Message | bool:
        path = msg.path or "/"
        interface = msg.interface
        member = msg.member or ""
        obj = self.objects.get(path)
        if interface == INTROSPECTABLE or (interface is None and member == "Introspect"):
            if member == "Introspect" and msg.signature == "":
                return self._introspect(msg, path, obj)
        elif interface == PEER:
            if member == "Ping":
                return Message.new_method_return(msg)
        elif interface == OBJECT_MANAGER and path == "/":
            if member == "GetManagedObjects" and msg.signature == "":
                return self._managed_objects(msg)
        elif interface == PROPERTIES and obj is not None:
            return self._properties(msg, obj, member) or _unknown_method(msg)
        elif obj is not None and interface in obj.interface_names():
            outcome = obj.call(interface, member, msg)
            if outcome is not None:
                return outcome
        if obj is None and not self._is_parent(path):
            return Message.new_error(msg, ERROR_UNKNOWN_OBJECT, f"No such object path '{path}'")
        return _unknown_method(msg)

    def _properties(self, msg: Message, obj: SimObject, member: str) -> Message | bool | None:
        body = msg.body
        if member == "GetAll" and msg.signature == "s":
            values = obj.get_all(body[0])
            if values is None:
                return _no_such_interface(msg, body[0])
            return Message.new_method_return(msg, "a{sv}", [values])
        if member == "Get" and msg.signature == "ss":
            values = obj.get_all(body[0])
            if values is None:
                return _no_such_interface(msg, body[0])
            value = values.get(body[1])
            if value is None:
                return Message.new_error(msg, ERROR_INVALID_ARGS, f"No such property '{body[1]}'")
            return Message.new_method_return(msg, "v", [value])
        if member == "Set" and msg.signature == "ssv":
            if body[0] not in obj.interface_names():
                return _no_such_interface(msg, body[0])
            outcome = obj.set_property(body[0], body[1], body[2], msg)
            if outcome is None:
                return Message.new_error(
                    msg, ERROR_UNKNOWN_PROPERTY, f"No such property '{body[1]}'"
                )
            return outcome
        return None

    def _managed_objects(self, msg: Message) -> Message | bool:
        result = {path: self.interfaces_of(obj) for path, obj in self.objects.items()}
        reply = Message.new_method_return(msg, "a{oa{sa{sv}}}", [result])
        hooks, self.after_managed_objects = self.after_managed_objects, []
        if not hooks:
            return reply
        self.send(reply)
        for hook in hooks:
            hook()  # its signals follow the reply at once, as from one main-loop iteration
        return True

    def _is_parent(self, path: str) -> bool:
        prefix = "/" if path == "/" else path + "/"
        return any(p.startswith(prefix) for p in self.objects)

    def _introspect(self, msg: Message, path: str, obj: SimObject | None) -> Message:
        prefix = "/" if path == "/" else path + "/"
        children: list[str] = []
        for p in self.objects:
            if p.startswith(prefix):
                child = p[len(prefix) :].split("/", 1)[0]
                if child and child not in children:
                    children.append(child)
        interfaces: list[str] = [INTROSPECTABLE]
        if path == "/":
            interfaces.append(OBJECT_MANAGER)
        if obj is not None:
            interfaces += [*obj.interface_names(), PROPERTIES]
        return Message.new_method_return(msg, "s", [node_xml(interfaces, children)])

    def _on_signal(self, msg: Message) -> None:
        if owner_change(msg) is not None:
            left = connection_left(msg)
            if left is not None:
                for callback in list(self.sender_gone):
                    callback(left)
            return
        for hook in self.signal_hooks:
            hook(msg)


def _ordered(obj: SimObject, interface: str) -> list[str]:
    return list((obj.get_all(interface) or {}).keys())


def _unknown_method(msg: Message) -> Message:
    return Message.new_error(
        msg,
        ERROR_UNKNOWN_METHOD,
        f'Method "{msg.member}" with signature "{msg.signature}" on interface '
        f'"{msg.interface}" doesn\'t exist\n',
    )


def _no_such_interface(msg: Message, name: str) -> Message:
    return Message.new_error(msg, ERROR_INVALID_ARGS, f"No such interface '{name}'")
