"""The links bluetoothd holds, for "never drop a link": no power cycle of an adapter while
a device on it is connected (adapter.py asks ``on``).

Two sources tell the same thing: Device1's ``Connected`` (D-Bus, and at
start-up with either ingest) and the management channel's Device Connected /
Disconnected events (management ingest). Kept by Device1 object path, so an
adapter's links are the paths under its own.

Signals alone can miss a link: bluetoothd 5.66 in the real-BlueZ guests set a
Device1's Connected with no PropertiesChanged for it (its GATT objects, UUIDs
and ServicesResolved came; reading Connected gave true; see
tests/service/test_claims.py, the unannounced-link tests, and
tests/realbluez/test_links.py). So a ServicesResolved true on a device we hold
no link for makes us read its Connected (services are resolved only over a
link: ``device_svc_resolved`` in BlueZ's src/device.c), and ``refresh`` reads
an adapter's devices from bluetoothd before a power cycle, which cannot be undone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dbus_fast import Variant

from ..bus.calls import BusGoneError, CallError
from ..const import BLUEZ_DEVICE, OBJECT_MANAGER, PROPERTIES
from ..tasks import TaskSet

_LOGGER = logging.getLogger(__name__)

# A call to bluetoothd (``Bluez.call``): path, interface, member, signature, body.
Call = Callable[..., Awaitable[list[Any]]]


class Links:
    """Device1 object path -> address, for every device connected now.

    ``call``: how to ask bluetoothd when its signals may have missed a link
    (None: signals only, as in the unit tests).
    """

    def __init__(self, call: Call | None = None) -> None:
        self.by_path: dict[str, str] = {}
        self.call = call
        self._reads = TaskSet(_LOGGER, "a read of a device's Connected")
        self._reading: set[str] = set()
        self._generation = 0  # a new bluetoothd (clear) makes reads under way stale

    def __len__(self) -> int:
        return len(self.by_path)

    def on(self, adapter_path: str) -> str | None:
        """The address of a device connected on the adapter, if any."""
        prefix = adapter_path + "/"
        return next((a for p, a in sorted(self.by_path.items()) if p.startswith(prefix)), None)

    def follow(
        self,
        path: str,
        props: Mapping[str, Variant],
        invalidated: list[str],
        known_address: str = "",
    ) -> None:
        """Device1's Connected (added or changed); a malformed value counts as none.

        ``known_address``: the device's address as we have it, when ``props`` lacks one.
        """
        connected = props.get("Connected")
        if "Connected" in invalidated:
            self.by_path.pop(path, None)
        if not isinstance(connected, Variant) or connected.signature != "b":
            resolved = props.get("ServicesResolved")
            if isinstance(resolved, Variant) and resolved.value is True:
                self._confirm(path, known_address)
            return
        if connected.value:
            address = props.get("Address")
            self.by_path[path] = (
                address.value
                if isinstance(address, Variant) and address.signature == "s"
                else known_address or path.rsplit("/", 1)[-1]
            )
            _LOGGER.info("%s: connected (no power cycle while it is)", self.by_path[path])
        elif self.by_path.pop(path, None) is not None:
            _LOGGER.info("%s: disconnected", path.rsplit("/", 1)[-1])

    def connected(self, path: str, address: str) -> None:
        """The channel's Device Connected."""
        if path not in self.by_path:
            _LOGGER.info("%s: connected (no power cycle while it is)", address)
        self.by_path[path] = address

    def disconnected(self, path: str, address: str) -> None:
        """The channel's Device Disconnected."""
        if self.by_path.pop(path, None) is not None:
            _LOGGER.info("%s: disconnected", address)

    def drop(self, path: str) -> None:
        """The Device1 object is gone (its link with it)."""
        self.by_path.pop(path, None)

    def drop_under(self, adapter_path: str) -> None:
        """The adapter is gone: its links with it."""
        prefix = adapter_path + "/"
        for path in [p for p in self.by_path if p.startswith(prefix)]:
            del self.by_path[path]

    def clear(self) -> None:
        """bluetoothd is gone: its links, and what we were reading of it."""
        self.by_path.clear()
        self._generation += 1
        self._reads.cancel()
        self._reading.clear()

    def _confirm(self, path: str, known_address: str) -> None:
        """ServicesResolved true on a device we hold no link for: read its Connected."""
        if self.call is None or path in self.by_path or path in self._reading:
            return
        self._reading.add(path)
        self._reads.spawn(self._read_connected(path, known_address, self._generation))

    async def _read_connected(self, path: str, known_address: str, generation: int) -> None:
        assert self.call is not None
        try:
            (value,) = await self.call(path, PROPERTIES, "Get", "ss", [BLUEZ_DEVICE, "Connected"])
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.debug("%s: Connected not readable: %s", path, exc)
            return
        finally:
            if generation == self._generation:
                self._reading.discard(path)
        if generation == self._generation and path not in self.by_path:
            self.follow(path, {"Connected": value}, [], known_address)

    async def refresh(self, adapter_path: str) -> None:
        """The adapter's links read from bluetoothd itself (GetManagedObjects).

        Only adds links: one that ended is forgotten by its own signal, and a
        stale one only holds a power cycle off.
        """
        if self.call is None:
            return
        generation = self._generation
        try:
            (objects,) = await self.call("/", OBJECT_MANAGER, "GetManagedObjects")
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.warning("links not re-read: %s", exc)
            return
        if generation != self._generation:
            return
        prefix = adapter_path + "/"
        for path, interfaces in objects.items():
            device = interfaces.get(BLUEZ_DEVICE)
            if device is not None and path.startswith(prefix) and path not in self.by_path:
                self.follow(path, device, [])
