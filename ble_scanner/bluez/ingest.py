"""Which ingest is in use, and the switching between them (docs/behaviour.md "Ingest").

With the kernel's management channel open (``mgmtchannel.py``) reports come
from its frames, and our match for every Device1 ``PropertiesChanged`` is
removed: none of BlueZ's per-advertisement signals reach us. When the channel
fails the match comes back, the BlueZ side reads Device1 state again, and
the channel is tried again every ``MGMT_RETRY_INTERVAL``; once it opens, the
match goes again. The match narrowed to Adapter1 (``properties_rule``) stays
in every ingest, for ``Powered`` and ``Discovering``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from dbus_fast.aio import MessageBus

from ..bus import calls
from ..bus.calls import BusGoneError, CallError
from ..const import BLUEZ_ROOT_PATH, BLUEZ_SERVICE, PROPERTIES
from ..modes import Ingest
from ..tasks import TaskSet
from . import mgmt
from .mgmtchannel import MgmtChannel, WakeUp, describe

_LOGGER = logging.getLogger(__name__)

# How often a failed management channel is tried again: a bluetoothd or
# kernel hiccup is over by then, and a refusal (no CAP_NET_ADMIN) costs one
# failed socket(2) twice a minute.
MGMT_RETRY_INTERVAL: Final = 30.0


class MgmtUnavailable(Exception):
    """``--ingest mgmt`` and the management channel cannot be opened."""


def properties_rule(interface: str | None = None) -> str:
    """bluetoothd's PropertiesChanged under /org/bluez; of one interface when given."""
    return calls.signal_rule(
        sender=BLUEZ_SERVICE,
        interface=PROPERTIES,
        member="PropertiesChanged",
        path_namespace=BLUEZ_ROOT_PATH,
        arg0=interface,
    )


class IngestSwitch:
    """The channel, its retries, and our Device1 match, kept to the ingest asked for."""

    def __init__(
        self,
        bus: MessageBus,
        call_timeout: float,
        ingest: Ingest,
        mgmt_socket: str,
        on_event: Callable[[mgmt.Event], None],
        resync: Callable[[], Awaitable[None]],
        wake_up: WakeUp | None = None,
    ) -> None:
        """``resync``: read Device1 state again after falling back (reports nothing);
        ``wake_up``: told around each wake-up's frames (mgmtchannel.py)."""
        self.bus = bus
        self.call_timeout = call_timeout
        self.ingest = ingest
        self.resync = resync
        self.channel = MgmtChannel(on_event, self._lost, mgmt_socket, wake_up)
        # True while reports come from the channel (its socket is open).
        self.mgmt_active = False
        # Whether our match for every Device1 PropertiesChanged is on the bus.
        self.device_match = False
        self._retry: asyncio.TimerHandle | None = None
        # The changes of match under way, each waiting for the one before it.
        self._switches = TaskSet(_LOGGER, "ingest switch")
        self._switch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def in_use(self) -> str:
        """ "mgmt" or "dbus", for GetStatus and the tree."""
        return Ingest.MGMT.value if self.mgmt_active else Ingest.DBUS.value

    async def start(self) -> None:
        """Open the channel if asked, else add the Device1 match; MgmtUnavailable for
        ``mgmt`` without a channel."""
        if self.ingest is not Ingest.DBUS:
            error = self._open()
            if error and self.ingest is Ingest.MGMT:
                raise MgmtUnavailable(f"cannot open {self.channel.source}: {error}")
            if error:
                _LOGGER.warning(
                    "cannot open %s (%s): D-Bus ingest, trying again every %g s",
                    self.channel.source, error, MGMT_RETRY_INTERVAL,
                )  # fmt: skip
                self._schedule_retry()
        if not self.mgmt_active:
            await calls.add_match(self.bus, properties_rule(), timeout=self.call_timeout)
            self.device_match = True

    def close(self) -> None:
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        self._switches.cancel()
        self.channel.close()
        self.mgmt_active = False

    def set(self, ingest: Ingest) -> None:
        """The Ingest setting changed: switch now (a failing channel falls back as ever)."""
        if ingest is self.ingest:
            return
        _LOGGER.info("ingest %s", ingest.value)
        self.ingest = ingest
        if ingest is not Ingest.DBUS:
            if not self.mgmt_active and self._retry is None:
                self._try_again()
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.mgmt_active:
            self.channel.close()
            self.mgmt_active = False
            self._run(self._fall_back)

    def _open(self) -> str:
        """Open the channel; "" when it reads, else why not."""
        try:
            self.channel.open()
        except OSError as exc:
            return describe(exc)
        self.mgmt_active = True
        return ""

    def _schedule_retry(self) -> None:
        if not self._closing:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(MGMT_RETRY_INTERVAL, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        if self._closing or self.mgmt_active or self.ingest is Ingest.DBUS:
            return
        error = self._open()
        if error:
            _LOGGER.debug("management channel still unavailable: %s", error)
            self._schedule_retry()
            return
        _LOGGER.info("management ingest again")
        self._run(lambda: self._want_device_match(False))

    def _lost(self, reason: str) -> None:
        """The channel failed: D-Bus ingest until it can be opened again."""
        self.mgmt_active = False
        if self._closing:
            return
        _LOGGER.warning(
            "management channel lost (%s): D-Bus ingest, trying again every %g s",
            reason, MGMT_RETRY_INTERVAL,
        )  # fmt: skip
        self._schedule_retry()
        self._run(self._fall_back)

    def _run(self, step: Callable[[], Awaitable[None]]) -> None:
        """One change of match at a time, in the order asked; ``close`` ends them all.

        A step is made only when its turn comes, so a switch cancelled before it
        starts leaves no coroutine behind. The one before is waited for without
        taking its outcome (a failure is its own, logged by the task set) and
        without swallowing our own cancellation.
        """
        previous = self._switch

        async def run() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await step()

        self._switch = self._switches.spawn(run(), name="ingest-switch")

    async def _fall_back(self) -> None:
        """The Device1 match again, then Device1 state read again (not reported)."""
        await self._want_device_match(True)
        if not self.mgmt_active and not self._closing:
            await self.resync()

    async def _want_device_match(self, wanted: bool) -> None:
        """Our match for every Device1 PropertiesChanged on (D-Bus ingest) or off."""
        if self.device_match == wanted or (not wanted and not self.mgmt_active):
            return
        change = calls.add_match if wanted else calls.remove_match
        try:
            await change(self.bus, properties_rule(), timeout=self.call_timeout)
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.warning("Device1 match not %s: %s", "added" if wanted else "removed", exc)
            return
        self.device_match = wanted
