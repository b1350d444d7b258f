"""A BlueZ 5.72 simulator on a real D-Bus bus, for tests, the demo and benchmarks.

No Bluetooth hardware is needed for the tests, the demo or the benchmarks: this
package is bluetoothd 5.72's D-Bus API written on dbus-fast's low-level API,
owning ``org.bluez`` on a real ``dbus-daemon``. bleak's own BlueZ backend runs
against it unchanged (active and passive scanning), and ``busctl``/``gdbus``
read it like the real thing. It follows ``src/adapter.c``, ``src/device.c``,
``src/adv_monitor.c`` and ``gdbus/object.c`` of BlueZ 5.72 where a scanning
client can tell the difference; the real-BlueZ tier (tests/realbluez, Debian's
bluetoothd 5.66 and 5.82 in QEMU guests) runs the same scenarios on both and
keeps it honest (tests/README.md).

Modules
-------

- ``__main__.py``: python -m ble_scanner.testing.simulator, ble-scanner-sim
- ``simulator.py``: BluezSimulator: the world, scripting and fault injection
- ``bluetoothd.py``: the process on the bus: owning org.bluez, a clean exit or a crash
- ``kernel.py``: the kernel under it: management events, scans a crash leaves running
- ``objects.py``: object registry, dispatch, PropertiesChanged coalescing
- ``adapter.py``: Adapter1, discovery sessions and report gating
- ``session.py``: one sender's discovery session and filter
- ``filters.py``: SetDiscoveryFilter parsing, merging, matching
- ``device.py``: Device1 and how one report changes it
- ``monitor.py``: AdvertisementMonitorManager1
- ``report.py``: one advertising report (AD structures)
- ``radio.py``: advertisers replayed while someone listens
- ``mgmt.py``: the kernel's management-channel frames and the socket serving them
- ``scene.py``: the demo scene (SmartShunt, Ruuvi, iBeacon, BTHome, phones)
- ``faults.py``: per-adapter fault switches
- ``malformed.py``: Device1 data BlueZ would never send
- ``raw.py``: objects published exactly as given
- ``introspection.py``: Introspect XML as bluetoothd returns it
- ``wire.py``: hand-built messages (InterfacesAdded from /), bus/writer.py's fix
- ``const.py``: BlueZ 5.72 numbers and error texts
- ``names.py``: D-Bus names only the simulator uses
- ``uuids.py``: UUIDs as BlueZ spells them: 128-bit, lower case

What it models
--------------

- **Objects**: ObjectManager at ``/`` (InterfacesAdded/InterfacesRemoved are
  emitted *from* ``/`` and list ``org.freedesktop.DBus.Introspectable`` and
  ``.Properties`` as bluetoothd does), ``/org/bluez`` (AgentManager1),
  ``/org/bluez/hciN`` (Adapter1, and AdvertisementMonitorManager1 when
  experimental), ``/org/bluez/hciN/dev_AA_BB_...`` (Device1 with BlueZ's types:
  ``ManufacturerData a{qv}`` of ``ay``, ``ServiceData a{sv}`` of ``ay``,
  ``RSSI n``, ``TxPower n``, ``AdvertisingFlags ay``, ...; optional properties
  absent until known). Properties Get/GetAll/Set with gdbus's errors;
  Introspect XML.
- **Discovery sessions per D-Bus sender**, ended when the sender leaves the
  bus; filters per sender, set before or after StartDiscovery, surviving
  StopDiscovery; merged filters (a regular session lifts everyone's filter);
  every error of ``start_discovery``, ``stop_discovery``,
  ``set_discovery_filter`` and ``remove_device`` with BlueZ's names and texts
  (NotReady, InProgress "Operation already in progress", Failed "No discovery
  started", InvalidArguments for unknown keys, wrong types, out-of-range values,
  RSSI with Pathloss and AutoConnect on 5.72, DoesNotExist). Replies to
  StartDiscovery and StopDiscovery are deferred to the "kernel" and sent
  *before* Discovering flips; no Discovering signal when a client joins with an
  unchanged merged filter. Powered is settable (asynchronous); power-off drops
  every session and power-on restores none.
- **Advertising** (``btd_adapter_device_found``): reports are dropped unless
  discovering or matching a monitor; non-discoverable advertisers are hidden
  during unfiltered discovery; merged-filter matching (UUIDs, RSSI, Pathloss,
  Pattern: one client's Pattern hides devices from everyone, as the code does);
  RSSI on every report while discovery is filtered (any session's filter that
  is not the trivial one, as ``merge_discovery_filters`` decides; 5.66 has no
  trivial-filter check), else the 8 dBm threshold;
  DuplicateData; ManufacturerData/ServiceData accumulating per key (a type
  missing from a new advertisement is kept, as measured on 5.66 and 5.82);
  service-data UUIDs added to UUIDs; one InterfacesAdded on first sighting, one
  PropertiesChanged per report (changes of one main-loop iteration coalesced
  per object and interface, as gdbus does), nothing when nothing changed;
  RSSI/TxPower invalidated when the last session ends; temporary
  non-connectable devices removed at that moment; temporary devices removed
  ``temporary_timeout`` (30 s) after they were last heard.
- **AdvertisementMonitorManager1**: RegisterMonitor reads the application's
  objects (GetManagedObjects, then its InterfacesAdded/Removed), calls
  Activate, DeviceFound/DeviceLost, Release (on Unregister, adapter removal,
  bluetoothd exit, invalid monitors); matching reports update Device1 without
  discovery. Off with ``experimental=False`` or per adapter.
- **The world**: adapter hot-plug, power cycles, bluetoothd restarts (a new
  connection and unique name; adapters come back powered with no sessions),
  and faults (below). A **radio** replays registered advertisers while their
  adapter listens, because bleak's ``discover()`` only sees devices reporting
  during its scan. A **demo scene** (``scene.load_scene``) has a Victron
  SmartShunt instant readout (0x02E1), a Ruuvi RAWv2 tag (0x0499), an iBeacon
  (0x004C), a BTHome v2 sensor (0xFCD2) and phones whose private addresses
  rotate, with RSSI jitter.
- **The management channel** (``mgmt_socket=PATH``): the kernel's control
  socket as a Unix ``SOCK_SEQPACKET`` socket at PATH, for a service that reads
  advertisements from the kernel instead of Device1 signals. Each datagram is
  one event (code, controller index ``N`` of ``hciN``, parameter length,
  parameters; little-endian): ``Device Found`` (0x0012) and ``Adv Monitor
  Device Found`` (0x002F) for every report the *kernel* delivers, and
  ``Device Connected`` (0x000B) / ``Device Disconnected`` (0x000C) for
  ``set_connected`` and power-off. Every connected client gets every event.
  What the kernel delivers comes before bluetoothd's gating (no discoverable
  flags, DuplicateData, Pattern or RSSI-delta logic): a powered adapter that
  is not silent reports while discovering
  (Device Found; only the Start Service Discovery filter applies: the merged
  RSSI threshold, and UUIDs looked for in the UUID lists, not in service
  data), or, with only monitors active, every report as Adv Monitor Device
  Found with handle 0 (passive scanning, no controller offload:
  ``mgmt_adv_monitor_device_found`` leaves matching to bluetoothd). An
  external raw-HCI scanner hides nothing: its scan's reports reach the kernel
  too, and with monitors registered the kernel passes them on (as the D-Bus
  side delivers them to monitors). The EIR
  is the report's AD structures (``Report.ad_structures``), built once per
  Report; a scan response is its own event with flags 0x20 (Scan Response
  alone, as the kernel sets it), a not connectable advertisement has 0x04, an
  unknown RSSI is 127, LE public/random are address types 1/2.
  The channel outlives bluetoothd: a restart keeps clients connected; while
  bluetoothd is down (and after it is back but not yet discovering) reports
  still arrive only while a crashed one's scan is orphaned in the kernel
  (``orphan_scan``); a graceful stop ends the scan. A client that does not
  read never stalls the simulator: past its socket's queue, up to 4 096
  frames wait per client, then frames are dropped and counted, as the kernel
  drops events for a full control socket.
- **Per** ``version`` (``"5.66"``, ``"5.72"``, ``"head"``): filter keys
  (``head`` adds AutoConnect), the trivial-filter check (not in 5.66, where
  every filter makes discovery filtered), connected
  devices kept at the end of discovery (``head``), service-data UUIDs in
  ``Device1.UUIDs`` (not in 5.66).

Python API
----------

::

    from ble_scanner.testing.simulator import BluezSimulator, Report

    async with BluezSimulator(bus_address=None,      # None: DBUS_SYSTEM_BUS_ADDRESS
                              version="5.72",        # or "5.66", "head"
                              experimental=True,     # AdvertisementMonitorManager1
                              temporary_timeout=30.0,
                              kernel_delay=0.0,      # delay of the "kernel" answers
                              orphan_scan=0.0,       # see fault injection
                              monitor_crash_patterns=8) as sim:
        await sim.add_adapter("hci0", address="00:1A:7D:DA:71:10", powered=True,
                              monitor_manager=True, le_only=False)  # -> object path
        await sim.advertise("hci0", "C0:11:22:33:44:55", address_type="public",
                            rssi=-60, name=None, manufacturer_data={0x02E1: b"\\x10..."},
                            service_data={"fcd2": b"\\x40..."}, service_uuids=["180f"],
                            tx_power=None, flags=0x06, connectable=True,
                            scan_response=False)     # -> True if BlueZ reports it
        sim.advertise_report("hci0", Report.build(...))  # sync bulk path; then
        await sim.drain()                                # wait for the socket
        sim.add_advertiser("hci0", "C0:...", period=1.0, rssi=-70)  # the radio
        sim.add_shared_advertiser("C0:...", {"hci0": -50, "hci1": -65}, period=1.0)
        #   one device heard by two adapters in the same events, each at its RSSI;
        #   set_silent("hci0") quiets one adapter's radio (both ingests)
        sim.remove_advertiser("hci0", "C0:...")
        await sim.set_powered("hci0", False)
        await sim.remove_adapter("hci0")
        await sim.restart_bluetoothd(downtime=0.0, graceful=True)
        # or its halves: stop_bluetoothd(graceful), start_bluetoothd(experimental)
        sim.set_connected("hci0", "C0:...", True)    # False, reason=2 (local host)

    BluezSimulator(..., mgmt_socket=str(tmp_path / "mgmt"))   # serve the management channel

``advertise`` is async and applies back-pressure: it waits for the socket to
drain past 512 queued messages (D-Bus signals, or management frames waiting
for a client); ``drain`` waits for both. ``scene.load_scene(sim, "demo",
adapters=["hci0"], period=1.0, seed=None)`` starts the demo scene on an existing
simulator; ``await scene.stop()`` ends it.

Introspection: ``sessions(adapter)`` ({unique name: filter as Python values}),
``preset_filters(adapter)`` (filters of senders not discovering),
``is_discovering``, ``is_powered``, ``devices``, ``device_path(adapter,
address)``, ``monitors``, ``calls(...)``, ``call_count(member, adapter=,
sender=)``, ``clear_calls()``.

Fault injection
---------------

- ``refuse_start_discovery(adapter, count=1)``: the kernel refuses the next
  start: deferred InProgress "Operation already in progress", session removed,
  Discovering stays false;
- ``set_external_scanner(adapter, active=True)``: a raw-HCI scanner holds the
  controller; every start is refused that way until cleared (venus#1597);
- ``BluezSimulator(orphan_scan=S)``: after a crash (``graceful=False``) the
  kernel still runs the dead bluetoothd's scan; the next one's starts get
  InProgress for S seconds (the real kernel: up to 10.24 s,
  ``const.KERNEL_LE_DISCOVERY_TIMEOUT``; 0 by default, 1 s in the differential
  backends);
- ``BluezSimulator(monitor_crash_patterns=8)``: bluetoothd crashes reading a
  monitor with that many ``or_patterns`` patterns or more, as 5.66 and 5.82 do (on by
  default; ``None`` turns it off);
- ``refuse_stop_discovery(adapter, count=1)``: bluez#807: StopDiscovery gets
  InProgress, the session is removed and Discovering stays true;
- ``drop_discovering(adapter, keep_sessions=True)``: the kernel stopped the
  scan: Discovering false with sessions still held; with
  ``keep_sessions=False`` it is an ``adapter_stop``-like reset;
- ``set_silent(adapter, True)``: Discovering stays true, every report is
  swallowed;
- ``set_reply_delay(member, seconds, adapter=None)``: calls of ``member`` wait
  before being handled (timeouts);
- ``inject_device(adapter, address, props)``, ``inject_object(path,
  interfaces)``, ``inject_properties_changed(path, changed, invalidated)``,
  ``remove_object(path)``: raw data as given; ``malformed.SAMPLES`` has wrong
  types, oversized payloads, odd names, missing Address, impossible values;
- ``add_monitor_manager(adapter)`` / ``remove_monitor_manager(adapter)``:
  AdvertisementMonitorManager1 appears on, or is removed alone from, a
  published adapter (its monitors get Release first);
- management channel (with ``mgmt_socket``): ``mgmt_send_raw(data)`` (any
  bytes as one datagram to every client), ``mgmt_disconnect_clients()`` (the
  channel fails), ``mgmt_stop_listening()`` / ``mgmt_start_listening()`` (the
  socket file goes, so the channel cannot be opened; then it can again),
  ``mgmt_clients()``, ``mgmt_sent(code)`` (events sent per event code while a
  client was connected; ``simulator.MGMT_RAW`` counts raw sends),
  ``mgmt_dropped()``;
- ``start_bluetoothd(monitor_manager_later=True)``, and the same keyword on
  ``restart_bluetoothd``: Adapter1 is exported alone before the name is taken,
  and the manager follows in its own InterfacesAdded right after the next
  GetManagedObjects reply. bluetoothd never does this (it publishes all of an
  adapter's interfaces in one signal, the default here); another org.bluez
  implementation did, and the service must cope.

Standalone
----------

::

    DBUS_SYSTEM_BUS_ADDRESS=unix:path=/tmp/.../bus \\
        python -m ble_scanner.testing.simulator --scene demo --adapters hci0,hci1 \\
        [--no-experimental] [--version 5.72] [--temporary-timeout 30] [--period 1.0] \\
        [--bus-address ADDRESS] [--mgmt-socket PATH]
    # or: ble-scanner-sim ...

It prints one line, ``bluez simulator ready: org.bluez=:1.N adapters=hci0,hci1
...``, once the name is owned and the adapters exist, and exits 0 on
SIGINT/SIGTERM (after releasing ``org.bluez``).

Throughput
----------

About 45 000 reports/s delivered as PropertiesChanged to a subscriber
(DuplicateData on, one process, dbus-fast 5.2.0 with Cython, 2 vCPU); about
21 000/s through the async ``advertise()`` on dbus-fast 2.21.1 and 43 000/s
through ``advertise_report()``. A management-channel client adds about 4 µs
per report (the frame's encoding 2.7 µs, its ``send(2)`` 1.6 µs, measured
alone); the whole bulk path went from 37 000-40 000 to 21 000-23 000 reports per CPU-second
with a reading client process on the same 2 vCPUs. The simulator's connection
waits on a full socket instead of dying of EAGAIN (dbus-fast's writer bug; the
fix is ``ble_scanner.bus.writer.harden_writer``).

Known differences from BlueZ 5.72
---------------------------------

- No scan cycling: no 5 s idle gap between unfiltered rounds, no ~10 s kernel
  rounds; StopDiscovery's "idle phase" branch is taken only when Discovering
  was already dropped.
- No AdvertisingData property, no Class/Icon/Appearance/Modalias on devices, no
  connections: Connect/Pair return NotSupported; no agent callbacks.
- Monitor RSSI handling is simplified: RSSIHighThreshold gates DeviceFound,
  RSSILowThreshold+RSSILowTimeout trigger DeviceLost only on a later report,
  sampling period ignored.
- Pending Start/Stop replies at power-off get NotReady (BlueZ's reply there is
  not pinned down).
- With a proximity filter (RSSI/Pathloss), every report emits RSSI, even an
  unchanged value, as ``device_set_rssi_with_delta(..., 0)`` does.
- Management channel: the kernel merges a legacy ADV_IND/ADV_SCAN_IND with
  its scan response into one Device Found (EIR of both); here, as with
  extended advertising, they are separate events. Passive scanning sends no
  scan requests, yet scan responses given while only monitors are active are
  delivered (as on the D-Bus side). No controller offload (MSFT) monitors,
  no Device Found for BR/EDR, no Discovering/Index events, commands are read
  and ignored. Device Connected carries the device's name as EIR (the kernel
  sends the connection's advertising data when it has it). AD data longer than
  an AD structure holds (254 bytes) is cut; a name so cut becomes a Shortened
  Local Name.
- Invalid UTF-8 cannot be injected: dbus-daemon disconnects any sender that
  tries, so malformed names use odd but valid text.
"""

from __future__ import annotations

from .objects import CallRecord
from .report import Report
from .simulator import BluezSimulator, SimulatorError

__all__ = ["BluezSimulator", "CallRecord", "Report", "SimulatorError"]
