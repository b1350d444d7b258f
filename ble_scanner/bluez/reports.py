"""Reports from either ingest made into Device1 views, and handed to the hub.

One view per Device1 object path (``core/record.py`` ``DeviceView``), kept as
bluetoothd would show the device: D-Bus ingest updates it from Device1's
InterfacesAdded and PropertiesChanged; management ingest from the channel's
Device Found frames (``mgmt.py`` puts a frame onto Device1 as bluetoothd's
src/adapter.c and src/device.c would), with Device1 objects still read for
what the channel lacks (a cached name) but never reported a second time.
Every change that is a report goes to the sink (the hub). Malformed data is
counted and logged, rate-limited, never passed on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Final, Protocol

from dbus_fast import Variant

from ..core.record import DeviceView, MalformedData, adapter_name, unwrap_device
from . import mgmt

_LOGGER = logging.getLogger(__name__)

# At most one log line per kind of malformed data per this many seconds.
MALFORMED_LOG_INTERVAL: Final = 60.0


class ReportSink(Protocol):
    """Where reports go: the hub (``core/hub.py`` ``Hub.report``), and whether each
    adapter listens now (``Hub.listening``: time nobody listened is no silence)."""

    def report(self, view: DeviceView) -> object: ...

    def listening(self, adapter: str, listening: bool) -> None: ...


class RateLimitedLog:
    """Counts events and logs each kind at most once per interval."""

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) >= self.interval:
            self._last[kind] = now
            _LOGGER.warning("%s (%d so far)", message, self.counts[kind])


class Reports:
    """The Device1 views by object path, and the reports made of them."""

    def __init__(self, sink: ReportSink, malformed: RateLimitedLog) -> None:
        self.sink = sink
        self.malformed = malformed
        self.views: dict[str, DeviceView] = {}

    def address_of(self, path: str) -> str:
        view = self.views.get(path)
        return view.address if view is not None else ""

    # --- D-Bus: Device1 objects -------------------------------------------------------

    def device_added(
        self,
        path: str,
        device_props: Mapping[str, Variant],
        initial: bool,
        report: bool,
        mgmt_active: bool,
    ) -> None:
        """A Device1 object (InterfacesAdded, or GetManagedObjects when ``initial``).

        ``report``: False reads it without reporting (after falling back from the
        channel). With the channel active (``mgmt_active``), its frames are the reports.
        """
        view = self.views.get(path)
        try:
            props = unwrap_device(device_props)
            if mgmt_active and view is not None:
                # The channel reported this device: no second report, and no
                # older content over its own; only a name bluetoothd remembered.
                report = False
                name = props.get("Name")
                props = {} if name is None or view.content.name else {"Name": name}
            elif mgmt_active and not initial:
                report = False  # the channel's frame that made this object reports it
            if view is None:
                view = DeviceView(path, adapter_name(path))
            is_report = view.update(props)
        except (MalformedData, AttributeError, TypeError, ValueError) as exc:
            self.malformed("device", f"malformed Device1 data from {path}: {exc}")
            return
        if not view.address:
            self.malformed("device", f"Device1 {path} without an Address")
            return
        self.views[path] = view
        # A new object is a fresh report; one found at start-up is only a
        # report if it carries an RSSI, i.e. was heard in a running discovery.
        if report and is_report and (not initial or view.rssi is not None):
            self.sink.report(view)

    def device_changed(
        self, path: str, changed: Mapping[str, Variant], invalidated: list[str]
    ) -> None:
        """Device1's PropertiesChanged (D-Bus ingest): a report when it says one was heard."""
        view = self.views.get(path)
        if view is None:
            return
        try:
            is_report = view.update(unwrap_device(changed), invalidated)
        except (MalformedData, AttributeError, TypeError, ValueError) as exc:
            self.malformed("device", f"malformed Device1 data from {view.path}: {exc}")
            return
        if is_report:
            self.sink.report(view)

    def removed(self, path: str) -> None:
        """The Device1 object is gone: its view with it (presence is the hub's to decide)."""
        self.views.pop(path, None)

    def drop_under(self, adapter_path: str) -> None:
        prefix = adapter_path + "/"
        for path in [p for p in self.views if p.startswith(prefix)]:
            del self.views[path]

    def clear(self) -> None:
        self.views.clear()

    # --- the management channel -------------------------------------------------------

    def found(self, found: mgmt.Found, duplicate: bool) -> None:
        """One advertising report: onto its Device1 view as bluetoothd would put it.

        ``duplicate``: our discovery session is on the adapter, whose filter asks
        for DuplicateData (adapter.py).
        """
        path = found.path
        view = self.views.get(path)
        eir = (found.eir, duplicate)
        if (
            view is not None
            and view.eir is not None
            and view.eir[1] == duplicate
            and found.address == view.address
            and found.address_type == view.address_type
        ):
            if view.eir[0] == eir[0]:
                # The same advertisement again (a sensor between readings, a beacon):
                # bluetoothd would change nothing but RSSI, so only RSSI is applied.
                mgmt.apply_rssi(view, found)
                self.sink.report(view)
                return
            if mgmt.apply_reading(view, found):
                # The same advertisement with a new reading: only that payload changed.
                self.sink.report(view)
                return
        ad = mgmt.parse_eir(found.eir)
        if isinstance(ad, mgmt.Malformed):
            self.malformed("frame", f"malformed advertisement from {found.address}: {ad.reason}")
            return
        if view is None:
            if found.scan_response:
                return  # bluetoothd makes no device of a scan response alone
            view = DeviceView(path, adapter_name(path))
        try:
            # view.update(mgmt.device_changes(...)) without re-checking parsed values.
            mgmt.apply_report(view, found, ad, duplicate)
        except MalformedData as exc:
            self.malformed("device", f"malformed advertisement from {found.address}: {exc}")
            return
        view.eir, view.varying = eir, ad.varying
        self.views[path] = view
        self.sink.report(view)
