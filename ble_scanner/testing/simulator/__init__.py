"""A BlueZ 5.72 simulator on a real D-Bus bus, for tests, the demo and benchmarks.

It owns ``org.bluez`` on the (system) bus and behaves like bluetoothd where a
scanning client can tell: per-sender discovery sessions ended by disconnect,
merged filters, BlueZ's error names and texts, Discovering/Powered signals,
InterfacesAdded/Removed from ``/``, PropertiesChanged coalescing, the 8 dBm
RSSI rule, DuplicateData, per-company ManufacturerData accumulation,
RSSI/TxPower invalidation and temporary-device removal at the end of
discovery, the temporary timeout, adapter hot-plug, bluetoothd restarts and
AdvertisementMonitorManager1. bleak's BlueZ backend runs against it unchanged.

Use::

    async with BluezSimulator(bus_address) as sim:
        await sim.add_adapter("hci0")
        await sim.advertise("hci0", "C0:11:22:33:44:55", rssi=-60,
                            manufacturer_data={0x02E1: b"\\x10..."})

Scripting the world (all on ``BluezSimulator``):

- ``add_adapter`` / ``remove_adapter`` (hot-plug), ``set_powered`` (off drops
  every session), ``restart_bluetoothd(downtime=0, graceful=True)``, or its two
  halves ``stop_bluetoothd(graceful)`` / ``start_bluetoothd(experimental)``;
- ``advertise`` (async, applies back-pressure) and ``advertise_report`` (sync
  bulk path, then ``await drain()``); ``add_advertiser`` / ``remove_advertiser``
  replay a device while its adapter listens (the radio); ``scene.load_scene``
  fills it with realistic devices.

Fault injection:

- ``refuse_start_discovery(adapter, count=1)``: the kernel refuses the next
  start: deferred InProgress "Operation already in progress", session removed,
  Discovering stays false;
- ``set_external_scanner(adapter, active=True)``: a raw-HCI scanner holds the
  controller; every start is refused that way until cleared (venus#1597);
- ``BluezSimulator(orphan_scan=S)``: after a crash the kernel still runs the
  dead bluetoothd's scan; the next one's starts get InProgress for S seconds
  (the real kernel: up to 10.24 s, ``const.KERNEL_LE_DISCOVERY_TIMEOUT``);
- ``BluezSimulator(monitor_crash_patterns=8)``: bluetoothd crashes reading a
  monitor with that many patterns, as 5.66 and 5.82 do;
- ``refuse_stop_discovery(adapter, count=1)``: bluez#807: StopDiscovery gets
  InProgress, the session is removed and Discovering stays true;
- ``drop_discovering(adapter, keep_sessions=True)``: the kernel stopped the
  scan; with ``keep_sessions=False`` it is an ``adapter_stop``-like reset;
- ``set_silent(adapter, True)``: Discovering stays true, reports are swallowed;
- ``set_reply_delay(member, seconds, adapter=None)``: calls wait before
  being handled;
- ``inject_device`` / ``inject_object`` / ``inject_properties_changed`` /
  ``remove_object``: raw, possibly malformed data (samples in ``malformed``).

Modelled per ``version``: filter keys (``head`` adds AutoConnect), the
Discoverable filter (5.66), connected devices kept at the end of discovery
(``head``), service-data UUIDs in ``Device1.UUIDs`` (not in 5.66).

Introspection: ``sessions``, ``preset_filters``, ``is_discovering``,
``is_powered``, ``devices``, ``device_path``, ``monitors``, ``calls``,
``call_count``, ``clear_calls``.
"""

from __future__ import annotations

from .objects import CallRecord
from .report import Report
from .simulator import BluezSimulator, SimulatorError

__all__ = ["BluezSimulator", "CallRecord", "Report", "SimulatorError"]
