"""The Venus ``com.victronenergy.BusItem`` tree on dbus-fast, with velib_python's semantics.

dbus-spy, ``dbus -y``, dbus-flashmq (MQTT, VRM) and velib's DbusMonitor read a
Venus service through this protocol: ``GetItems`` on ``/``; ``GetValue`` /
``GetText`` / ``SetValue`` on every item; ``GetValue`` / ``GetText`` on ``/``
and on every intermediate node returning the dict of the values below it; and
``ItemsChanged`` on ``/``. Changes are collected and sent at most once a second,
because flashmq republishes every BusItem signal to MQTT and VRM.

Only ``com.victronenergy.BusItem`` is served here, as dbus-fast
``ServiceInterface`` exports, so a low-level message handler for another
interface on ``/`` (the Scanner1 service) coexists with it, and dbus-fast's own
introspection lists every path for ``dbus -y``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from dbus_fast import Message, MessageType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method, signal

from .const import (
    BUSITEM_INTERFACE,
    INVALID_SIGNATURE,
    INVALID_TEXT,
    ITEMS_CHANGED_INTERVAL,
    SETVALUE_NOT_WRITABLE,
    SETVALUE_OK,
    SETVALUE_REJECTED,
)

_LOGGER = logging.getLogger(__name__)

Value = int | float | str | None
"""An item's value; ``None`` is invalid (sent as an empty ``ai``)."""

Kind = type[int] | type[float] | type[str]
TextFn = Callable[[int | float | str], str]
OnChange = Callable[[str, Value], bool]
"""velib's onchangecallback: (path, new value) -> accept."""

_F = TypeVar("_F", bound=Callable[..., Any])

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def _dbus(returns: str = "", **args: str) -> Callable[[_F], _F]:
    """Give a method its D-Bus signature as annotations dbus-fast reads.

    dbus-fast takes signatures from annotation strings such as ``-> "v"``,
    which mypy reads as undefined names; setting them here keeps the Python
    annotations true and works the same on dbus-fast 2.21 and 5.x.
    """

    def apply(fn: _F) -> _F:
        annotations: dict[str, str] = dict(args)
        if returns:
            annotations["return"] = returns
        fn.__annotations__ = annotations
        return fn

    return apply


def invalid() -> Variant:
    """velib's VEDBUS_INVALID."""
    return Variant(INVALID_SIGNATURE, [])


def wrap(value: Value) -> Variant:
    """A value as velib's wrap_dbus_value sends it."""
    if value is None:
        return invalid()
    if isinstance(value, bool):
        return Variant("i", int(value))
    if isinstance(value, int):
        return Variant("i" if _INT32_MIN <= value <= _INT32_MAX else "x", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", value)


def _coerce(kind: Kind, value: Any) -> Value:
    """A value from the bus converted to ``kind``, or ValueError.

    dbus-spy sends what the user typed as a double if it parses as one, so an
    integral double is a valid int; bools are not numbers here.
    """
    if isinstance(value, bool):
        raise ValueError("boolean")
    if kind is str:
        if isinstance(value, str):
            return value
    elif kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(value, int | float):
        return float(value)
    raise ValueError(f"not a {kind.__name__}: {value!r}")


class Item:
    """One path: a typed value, its text, and whether others may write it."""

    __slots__ = ("_export", "kind", "onchange", "path", "text_fn", "value", "writable")

    def __init__(
        self,
        path: str,
        value: Value,
        kind: Kind,
        text_fn: TextFn | None,
        writable: bool,
        onchange: OnChange | None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.value = value
        self.text_fn = text_fn
        self.writable = writable
        self.onchange = onchange
        self._export: _ItemInterface | None = None

    def text(self) -> str:
        value = self.value
        if value is None:
            return INVALID_TEXT
        if self.text_fn is not None:
            return self.text_fn(value)
        if self.path == "/ProductId" and isinstance(value, int):
            return f"0x{value:X}"  # velib's default for /ProductId
        return str(value)

    def wire(self) -> dict[str, Variant]:
        return {"Value": wrap(self.value), "Text": Variant("s", self.text())}


class _ItemInterface(ServiceInterface):
    """``com.victronenergy.BusItem`` on one item path."""

    def __init__(self, tree: BusItemTree, item: Item) -> None:
        super().__init__(BUSITEM_INTERFACE)
        self._tree = tree
        self._item = item

    @method()
    @_dbus(returns="v")
    def GetValue(self) -> Variant:
        return wrap(self._item.value)

    @method()
    @_dbus(returns="s")
    def GetText(self) -> str:
        return self._item.text()

    @method()
    @_dbus(returns="i", value="v")
    def SetValue(self, value: Variant) -> int:
        return self._tree._set_from_bus(self._item, value)

    @method()
    @_dbus(returns="s", language="s", length="i")
    def GetDescription(self, language: str, length: int) -> str:
        return "No description given"  # velib's answer


class _NodeInterface(ServiceInterface):
    """``GetValue`` / ``GetText`` on ``/`` and intermediate nodes: the dict below the node."""

    def __init__(self, tree: BusItemTree, path: str) -> None:
        super().__init__(BUSITEM_INTERFACE)
        self._tree = tree
        self._prefix = "/" if path == "/" else path + "/"

    @method()
    @_dbus(returns="v")
    def GetValue(self) -> Variant:
        n = len(self._prefix)
        return Variant("a{sv}", {p[n:]: wrap(i.value) for p, i in self._tree._below(self._prefix)})

    @method()
    @_dbus(returns="v")
    def GetText(self) -> Variant:
        n = len(self._prefix)
        return Variant("a{ss}", {p[n:]: i.text() for p, i in self._tree._below(self._prefix)})


class _RootInterface(_NodeInterface):
    """``/``: the node methods plus ``GetItems`` and the ``ItemsChanged`` signal."""

    @method()
    @_dbus(returns="a{sa{sv}}")
    def GetItems(self) -> dict[str, dict[str, Variant]]:
        return {path: item.wire() for path, item in self._tree._items.items()}

    @signal()
    @_dbus(returns="a{sa{sv}}")
    def ItemsChanged(self) -> None:
        """Declared for introspection; the tree builds the signal itself."""


class BusItemTree:
    """The items of one Venus service, exported on ``bus`` as they are added.

    Add every item, then ``register()`` the service name: consumers scan a
    service once, when its name appears. Local changes (``tree[path] = v``)
    and accepted ``SetValue`` calls are sent in one ``ItemsChanged`` at most
    every ``ITEMS_CHANGED_INTERVAL`` seconds; the first change after a quiet
    second goes out at once.
    """

    def __init__(self, bus: MessageBus, interval: float = ITEMS_CHANGED_INTERVAL) -> None:
        self._bus = bus
        self._interval = interval
        self._items: dict[str, Item] = {}
        self._nodes: dict[str, _NodeInterface] = {}
        self._pending: dict[str, None] = {}  # paths, in order of change
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -interval
        self._live = False  # before register(), consumers read everything with GetItems
        self._closed = False
        root = _RootInterface(self, "/")
        self._nodes["/"] = root
        bus.export("/", root)

    # --- reading --------------------------------------------------------------

    def __contains__(self, path: object) -> bool:
        return path in self._items

    def __getitem__(self, path: str) -> Value:
        return self._items[path].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def text(self, path: str) -> str:
        return self._items[path].text()

    # --- building -------------------------------------------------------------

    def add_item(
        self,
        path: str,
        value: Value,
        *,
        kind: Kind | None = None,
        text_fn: TextFn | None = None,
        writable: bool = False,
        onchange: OnChange | None = None,
    ) -> None:
        """Export ``path``; ``kind`` (int, float or str) defaults to the type of ``value``.

        An item added while the service is live is announced in the next
        ItemsChanged, so dbus-spy and flashmq pick it up.
        """
        if not path.startswith("/") or path == "/" or path.endswith("/"):
            raise ValueError(f"not an item path: {path!r}")
        if path in self._items:
            raise ValueError(f"{path} exists")
        if path in self._nodes:
            raise ValueError(f"{path} has items below it")
        if kind is None:
            if value is None:
                raise ValueError(f"{path}: an invalid initial value needs a kind")
            kind = str if isinstance(value, str) else float if isinstance(value, float) else int
        item = Item(path, None, kind, text_fn, writable, onchange)
        item.value = self._local(item, value)
        self._add_nodes(path)
        item._export = _ItemInterface(self, item)
        self._bus.export(path, item._export)
        self._items[path] = item
        self._changed(path)

    def remove_subtree(self, prefix: str) -> list[str]:
        """Invalidate and remove ``prefix`` and every item below it; returns the paths.

        The protocol has no item-removed signal: velib's del_tree sends each
        path invalid first, and so do we, in the next ItemsChanged.
        """
        below = prefix.rstrip("/") + "/"
        paths = [p for p in self._items if p == prefix or p.startswith(below)]
        for path in paths:
            item = self._items.pop(path)
            item.value = None
            if item._export is not None:
                self._bus.unexport(path, item._export)
                item._export = None
            self._changed(path)
        self._remove_empty_nodes()
        return paths

    def __setitem__(self, path: str, value: Value) -> None:
        item = self._items[path]
        value = self._local(item, value)
        if value == item.value:
            return
        item.value = value
        self._changed(path)

    async def register(self, name: str) -> RequestNameReply:
        """Request ``name`` (DO_NOT_QUEUE, as velib does) now that every item exists.

        From here on changes and added items are announced. Returns the reply;
        anything but PRIMARY_OWNER means another process has the name.
        """
        reply = await self._bus.request_name(name, NameFlag.DO_NOT_QUEUE)
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            self._live = True
        return reply

    async def close(self) -> None:
        """Unexport everything; pending changes are dropped with the service."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        for path, item in self._items.items():
            if item._export is not None:
                self._bus.unexport(path, item._export)
                item._export = None
        self._items.clear()
        for path, node in self._nodes.items():
            self._bus.unexport(path, node)
        self._nodes.clear()

    def flush(self) -> None:
        """Send the pending changes now (tests, shutdown); the interval restarts."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()

    # --- internals ------------------------------------------------------------

    @staticmethod
    def _local(item: Item, value: Value) -> Value:
        if value is None:
            return None
        try:
            return _coerce(item.kind, value)
        except ValueError:
            raise TypeError(f"{item.path} holds {item.kind.__name__}, not {value!r}") from None

    def _below(self, prefix: str) -> Iterator[tuple[str, Item]]:
        if prefix == "/":
            return iter(self._items.items())
        return ((p, i) for p, i in self._items.items() if p.startswith(prefix))

    def _add_nodes(self, path: str) -> None:
        parts = path.split("/")
        for n in range(2, len(parts)):
            node_path = "/".join(parts[:n])
            if node_path in self._items:
                raise ValueError(f"{node_path} is an item, {path} cannot go below it")
            if node_path not in self._nodes:
                node = _NodeInterface(self, node_path)
                self._bus.export(node_path, node)
                self._nodes[node_path] = node

    def _remove_empty_nodes(self) -> None:
        for node_path in [p for p in self._nodes if p != "/"]:
            prefix = node_path + "/"
            if not any(p.startswith(prefix) for p in self._items):
                self._bus.unexport(node_path, self._nodes.pop(node_path))

    def _set_from_bus(self, item: Item, variant: Any) -> int:
        if not item.writable or item.path not in self._items:
            return SETVALUE_NOT_WRITABLE
        if not isinstance(variant, Variant):
            return SETVALUE_NOT_WRITABLE
        try:
            value = _coerce(item.kind, variant.value)
        except ValueError:
            return SETVALUE_NOT_WRITABLE
        if value == item.value:
            return SETVALUE_OK
        if item.onchange is not None:
            try:
                accepted = item.onchange(item.path, value)
            except Exception:
                _LOGGER.exception("onchange for %s failed; the change is rejected", item.path)
                return SETVALUE_REJECTED
            if not accepted:
                return SETVALUE_REJECTED
        item.value = value
        self._changed(item.path)
        return SETVALUE_OK

    def _changed(self, path: str) -> None:
        if not self._live or self._closed:
            return
        self._pending[path] = None
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        # call_at even when due now: changes made in the same turn share a signal.
        due = max(loop.time(), self._last_flush + self._interval)
        self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if not self._pending or self._closed or not self._bus.connected:
            self._pending.clear()
            return
        changes: dict[str, dict[str, Variant]] = {}
        for path in self._pending:
            item = self._items.get(path)
            if item is None:  # removed: invalid is its last word
                changes[path] = {"Value": invalid(), "Text": Variant("s", INVALID_TEXT)}
            else:
                changes[path] = item.wire()
        self._pending.clear()
        self._last_flush = asyncio.get_running_loop().time()
        self._bus.send(
            Message(
                message_type=MessageType.SIGNAL,
                path="/",
                interface=BUSITEM_INTERFACE,
                member="ItemsChanged",
                signature="a{sa{sv}}",
                body=[changes],
            )
        )


def add_mandatory_paths(
    tree: BusItemTree,
    processname: str,
    processversion: str,
    connection: str,
    deviceinstance: int,
    productid: int,
    productname: str,
    firmwareversion: str,
    hardwareversion: str,
    connected: int,
) -> None:
    """velib's add_mandatory_paths: the paths every Venus service publishes."""
    tree.add_item("/Mgmt/ProcessName", processname)
    tree.add_item("/Mgmt/ProcessVersion", processversion)
    tree.add_item("/Mgmt/Connection", connection)
    tree.add_item("/DeviceInstance", deviceinstance)
    tree.add_item("/ProductId", productid)
    tree.add_item("/ProductName", productname)
    tree.add_item("/FirmwareVersion", firmwareversion)
    tree.add_item("/HardwareVersion", hardwareversion)
    tree.add_item("/Connected", connected)
