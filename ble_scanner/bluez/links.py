"""The links bluetoothd holds, for "never drop a link": no power cycle of an adapter while
a device on it is connected (adapter.py asks ``on``).

Two sources tell the same thing: Device1's ``Connected`` (D-Bus, and at
start-up with either ingest) and the management channel's Device Connected /
Disconnected events (management ingest). Kept by Device1 object path, so an
adapter's links are the paths under its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dbus_fast import Variant

_LOGGER = logging.getLogger(__name__)


class Links:
    """Device1 object path -> address, for every device connected now."""

    def __init__(self) -> None:
        self.by_path: dict[str, str] = {}

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
        self.by_path.clear()
