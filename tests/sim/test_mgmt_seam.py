"""The management-channel seam: the kernel's frames on a Unix SOCK_SEQPACKET socket.

A plain socket client reads what the simulator serves and checks the bytes
against frames written out by hand from doc/mgmt-api.txt (not with the
simulator's encoder, nor the service's parser).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from dbus_fast import Variant

from ble_scanner.testing.simulator import BluezSimulator, Report, SimulatorError
from ble_scanner.testing.simulator.mgmt import (
    EV_ADV_MONITOR_DEVICE_FOUND,
    EV_DEVICE_CONNECTED,
    EV_DEVICE_DISCONNECTED,
    EV_DEVICE_FOUND,
)
from ble_scanner.testing.testbus import TestBus
from tests.helpers import assert_error, assert_ok, wait_until
from tests.sim.conftest import ADAPTER, adapter_call, set_filter
from tests.sim.test_monitors import VICTRON_PATTERN, Monitor, _register

MARKER = b"-- marker --"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def socket_file(path: str) -> bool:
    """Whether the seam's socket file is there (a stat: no need to go async)."""
    return os.path.exists(path)


class Client:
    """A management-channel reader: one datagram per frame."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        self.sock.setblocking(False)

    async def frame(self, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 70000), timeout)

    async def until_marker(self, sim: BluezSimulator) -> list[bytes]:
        """Every frame before a marker sent now: what the steps so far produced."""
        sim.mgmt_send_raw(MARKER)
        frames = []
        while (frame := await self.frame()) != MARKER:
            frames.append(frame)
        return frames

    def available(self) -> list[bytes]:
        """Every frame that can be read without waiting."""
        frames = []
        while True:
            try:
                frames.append(self.sock.recv(70000))
            except BlockingIOError:
                return frames

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mgmt_path() -> Iterator[str]:
    # A short directory: a Unix socket path has at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="mgmt-", dir="/tmp") as directory:
        yield os.path.join(directory, "mgmt")


@pytest_asyncio.fixture
async def msim(test_bus: TestBus, mgmt_path: str) -> AsyncIterator[BluezSimulator]:
    async with BluezSimulator(bus_address=test_bus.address, mgmt_socket=mgmt_path) as simulator:
        await simulator.add_adapter(ADAPTER)
        yield simulator


@pytest_asyncio.fixture
async def client(msim: BluezSimulator, mgmt_path: str) -> AsyncIterator[Client]:
    reader = Client(mgmt_path)
    await wait_until(lambda: msim.mgmt_clients() == 1, what="the client accepted")
    try:
        yield reader
    finally:
        reader.close()


async def start_discovery(msim: BluezSimulator, bus, **filter_entries: Variant) -> None:
    if filter_entries:
        assert_ok(await set_filter(bus, **filter_entries))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: msim.is_discovering(ADAPTER), what="Discovering")


async def test_a_client_is_owed_every_frame_from_its_connect_on(msim, mgmt_path, bus):
    """As a bound control socket gets the kernel's events: a report made right after
    the connect, before the simulator's loop has turned to accept it, still arrives
    (a service that connects, starts discovery and hears at once lost it)."""
    await start_discovery(msim, bus)
    late = Client(mgmt_path)
    try:
        # No await between the connect and the report: the loop cannot accept first.
        await msim.advertise(ADAPTER, "C0:11:22:33:44:55", manufacturer_data={0x02E1: b"\x10"})
        frame = await late.frame()
        assert frame[:2] == EV_DEVICE_FOUND.to_bytes(2, "little")
    finally:
        late.close()


# --- exact bytes ---------------------------------------------------------------


async def test_device_found_bytes_of_a_public_advertisement(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(
        ADAPTER, "C0:11:22:33:44:55", rssi=-60, manufacturer_data={0x02E1: b"\x10\x01"}
    )
    assert await client.until_marker(msim) == [
        h(
            "1200 0000 1700"  # Device Found, hci0, 23 parameter bytes
            "554433 2211c0 01 c4 00000000 0900"  # address, LE public, -60 dBm, flags, EIR length
            "020106 05ffe1021001"  # Flags 0x06; manufacturer 0x02E1: 10 01
        )
    ]
    assert msim.mgmt_sent(EV_DEVICE_FOUND) == 1


async def test_scan_response_of_a_random_address_without_rssi(msim, client, bus):
    await start_discovery(msim, bus)
    report = Report.build(
        "D1:02:03:04:05:06",
        address_type="random",
        name="Ruuvi 1234",
        flags=None,
        scan_response=True,
    )
    report.rssi = None  # type: ignore[assignment]  # the controller had no RSSI
    msim.advertise_report(ADAPTER, report)
    assert await client.until_marker(msim) == [
        h(
            "1200 0000 1a00"
            "060504 0302d1 02 7f 20000000 0c00"  # LE random, RSSI 127, Scan Response
            "0b09 5275757669203132 3334"  # Complete Local Name "Ruuvi 1234"
        )
    ]


async def test_not_connectable_and_128_bit_service_data(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(
        ADAPTER,
        "C0:00:00:00:00:01",
        rssi=-1,
        flags=0x04,
        connectable=False,
        service_data={"6e400001-b5a3-f393-e0a9-e50e24dcca9e": b"\x01\x02"},
        tx_power=-8,
    )
    assert await client.until_marker(msim) == [
        h(
            "1200 0000 2800"
            "010000 0000c0 01 ff 04000000 1a00"  # Not Connectable
            "020104 020af8"  # Flags 0x04, TX power -8
            "1321 9ecadc240ee5a9e093f3a3b501 00406e 0102"  # 128-bit service data
        )
    ]


async def test_long_names(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:02", name="N" * 248, flags=None)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:03", name="M" * 300, flags=None)
    found, cut = await client.until_marker(msim)
    # 248 bytes (HCI_MAX_NAME_LENGTH) fit one AD structure.
    assert found[4:6] == (14 + 250).to_bytes(2, "little")
    assert found[18:20] == (250).to_bytes(2, "little")
    assert found[20:] == b"\xf9\x09" + b"N" * 248
    # An AD structure holds 254 data bytes at most: the rest is cut, as a Shortened name.
    assert cut[20:] == b"\xff\x08" + b"M" * 254
    assert cut[18:20] == (256).to_bytes(2, "little")


async def test_uuid_lists_and_several_manufacturers(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(
        ADAPTER,
        "C0:00:00:00:00:04",
        flags=0x06,
        service_uuids=["180f", "0000fe95-0000-1000-8000-00805f9b34fb"],
        manufacturer_data={0x004C: b"\x02\x15", 0x0059: b""},
    )
    frames = await client.until_marker(msim)
    assert [f[20:] for f in frames] == [h("020106 0503 0f1895fe 05ff4c000215 03ff5900")]


async def test_device_connected_and_disconnected(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:11:22:33:44:55", address_type="random", name="Phone")
    await client.until_marker(msim)
    msim.set_connected(ADAPTER, "C0:11:22:33:44:55", True)
    msim.set_connected(ADAPTER, "C0:11:22:33:44:55", False, reason=0x03)
    assert await client.until_marker(msim) == [
        h("0b00 0000 1400 554433 2211c0 02 08000000 0700 060950686f6e65"),  # Initiated, "Phone"
        h("0c00 0000 0800 554433 2211c0 02 03"),  # terminated by remote host
    ]
    assert msim.mgmt_sent(EV_DEVICE_CONNECTED) == 1
    assert msim.mgmt_sent(EV_DEVICE_DISCONNECTED) == 1


async def test_power_off_disconnects_links(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:05")
    msim.set_connected(ADAPTER, "C0:00:00:00:00:05", True)
    await client.until_marker(msim)
    await msim.set_powered(ADAPTER, False)
    assert await client.until_marker(msim) == [h("0c00 0000 0800 050000 0000c0 01 02")]


async def test_controller_index_follows_the_adapter_name(msim, client, bus):
    await msim.add_adapter("hci3")
    assert_ok(await adapter_call(bus, "StartDiscovery", path="/org/bluez/hci3"))
    await wait_until(lambda: msim.is_discovering("hci3"))
    await msim.advertise("hci3", "C0:00:00:00:00:06")
    (frame,) = await client.until_marker(msim)
    assert frame[:4] == h("1200 0300")


# --- which reports make frames --------------------------------------------------


async def test_nothing_while_nobody_scans(msim, client):
    assert not await msim.advertise(ADAPTER, "C0:00:00:00:00:01")
    assert await client.until_marker(msim) == []


async def test_every_report_before_bluetoothds_filtering(msim, client, bus):
    """DuplicateData off, unchanged content: Device1 changes once, the kernel reports twice;
    a non-discoverable advertiser is hidden from D-Bus in unfiltered discovery, not here."""
    await start_discovery(msim, bus)
    for _ in range(2):
        await msim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert not await msim.advertise(ADAPTER, "C0:00:00:00:00:02", flags=0)
    frames = await client.until_marker(msim)
    assert [f[6:12] for f in frames] == [h("010000 0000c0")] * 2 + [h("020000 0000c0")]
    assert msim.device_path(ADAPTER, "C0:00:00:00:00:02") is None


async def test_kernel_service_discovery_filter(msim, client, bus):
    """Start Service Discovery: RSSI threshold and UUID lists; service data alone does not match."""
    await start_discovery(msim, bus, UUIDs=Variant("as", ["180f"]), RSSI=Variant("n", -70))
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01", service_uuids=["180f"], rssi=-60)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:02", service_uuids=["180f"], rssi=-80)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:03", service_data={"180f": b"\x50"}, rssi=-60)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:04", rssi=-60)
    frames = await client.until_marker(msim)
    assert [f[6:12] for f in frames] == [h("010000 0000c0")]


async def test_monitors_only_every_report_with_handle_0(msim, client, bus):
    """Passive scanning without controller offload: every report, matched or not."""
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(msim.monitors(ADAPTER)), what="the monitor active")
    assert await msim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert not await msim.advertise(
        ADAPTER, "C0:00:00:00:00:02", manufacturer_data={0x0499: b"\x05"}, rssi=-70
    )
    frames = await client.until_marker(msim)
    assert frames == [
        h("2f00 0000 1800 0000 010000 0000c0 01 c4 00000000 0800 020106 04ffe10210"),
        h("2f00 0000 1800 0000 020000 0000c0 01 ba 00000000 0800 020106 04ff990405"),
    ]
    assert msim.mgmt_sent(EV_ADV_MONITOR_DEVICE_FOUND) == 2
    # Discovering as well: Device Found only.
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert [f[:2] for f in await client.until_marker(msim)] == [h("1200")]


@pytest.mark.parametrize("fault", ["silent", "power_off"])
async def test_faulty_adapter_delivers_nothing(msim, client, bus, fault):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(msim.monitors(ADAPTER)), what="the monitor active")
    await start_discovery(msim, bus)
    if fault == "silent":
        msim.set_silent(ADAPTER)
    else:
        await msim.set_powered(ADAPTER, False)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert await client.until_marker(msim) == []


async def test_the_radio_feeds_the_channel(msim, client, bus):
    msim.add_advertiser(ADAPTER, "C0:00:00:00:00:07", period=0.05, name="Radio")
    await start_discovery(msim, bus)
    frame = await client.frame()
    assert frame[:2] == h("1200") and frame.endswith(b"\x06\x09Radio")


# --- the channel outlives bluetoothd --------------------------------------------


async def test_restart_of_bluetoothd_keeps_the_connection(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.restart_bluetoothd()
    assert msim.mgmt_clients() == 1
    # The new bluetoothd does not scan: nothing; once someone scans again, frames.
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01")
    assert await client.until_marker(msim) == []
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01")
    assert len(await client.until_marker(msim)) == 1


async def test_an_orphaned_scan_reports_while_bluetoothd_is_down(test_bus, mgmt_path, bus):
    async with BluezSimulator(
        bus_address=test_bus.address, mgmt_socket=mgmt_path, orphan_scan=30.0
    ) as sim:
        await sim.add_adapter(ADAPTER)
        reader = Client(mgmt_path)
        try:
            await wait_until(lambda: sim.mgmt_clients() == 1)
            await start_discovery(sim, bus)
            await sim.stop_bluetoothd(graceful=False)
            sim.advertise_report(ADAPTER, Report.build("C0:00:00:00:00:01"))
            assert len(await reader.until_marker(sim)) == 1
            # The next bluetoothd is not discovering, but the kernel still scans.
            await sim.start_bluetoothd()
            assert not sim.is_discovering(ADAPTER)
            await sim.advertise(ADAPTER, "C0:00:00:00:00:01")
            assert len(await reader.until_marker(sim)) == 1
        finally:
            reader.close()


async def test_a_graceful_stop_ends_the_scan(msim, client, bus):
    await start_discovery(msim, bus)
    await msim.stop_bluetoothd(graceful=True)
    msim.advertise_report(ADAPTER, Report.build("C0:00:00:00:00:01"))
    assert await client.until_marker(msim) == []
    assert msim.mgmt_clients() == 1
    await msim.start_bluetoothd()


# --- clients and faults ---------------------------------------------------------


async def test_two_clients_both_get_every_frame(msim, client, mgmt_path, bus):
    second = Client(mgmt_path)
    try:
        await wait_until(lambda: msim.mgmt_clients() == 2)
        await start_discovery(msim, bus)
        for i in range(50):
            await msim.advertise(ADAPTER, f"C0:00:00:00:00:{i:02X}")
        first_frames = await client.until_marker(msim)
        second_frames = [await second.frame() for _ in range(51)]
        assert len(first_frames) == 50
        assert second_frames == [*first_frames, MARKER]
    finally:
        second.close()


async def test_a_client_that_does_not_read_stalls_nobody(msim, client, mgmt_path, bus):
    slow = Client(mgmt_path)
    try:
        await wait_until(lambda: msim.mgmt_clients() == 2)
        assert msim.mgmt is not None
        msim.mgmt.queue_limit = 8
        await start_discovery(msim, bus)
        received = 0
        total = 3000
        for i in range(total):
            msim.advertise_report(ADAPTER, Report.build(f"C0:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}"))
            if i % 100 == 99:
                received += len(client.available())
                await msim.drain()
        received += len(await client.until_marker(msim))
        assert received == total
        assert msim.mgmt_dropped() > 0
        assert msim.mgmt_clients() == 2
    finally:
        slow.close()


async def test_raw_bytes_reach_every_client_as_given(msim, client):
    msim.mgmt_send_raw(b"\x12\x00")
    msim.mgmt_send_raw(b"")
    assert await client.frame() == b"\x12\x00"
    assert await client.frame() == b""


async def test_disconnect_clients_and_listening_on_and_off(msim, client, mgmt_path):
    msim.mgmt_disconnect_clients()
    assert msim.mgmt_clients() == 0
    assert await client.frame() == b""  # end of file: the channel failed
    msim.mgmt_stop_listening()
    assert not socket_file(mgmt_path)
    with pytest.raises(OSError):
        Client(mgmt_path)
    msim.mgmt_start_listening()
    again = Client(mgmt_path)
    try:
        await wait_until(lambda: msim.mgmt_clients() == 1)
    finally:
        again.close()
    await wait_until(lambda: msim.mgmt_clients() == 0, what="a client that left is dropped")


async def test_stop_unlinks_the_socket(test_bus, mgmt_path):
    sim = BluezSimulator(bus_address=test_bus.address, mgmt_socket=mgmt_path)
    await sim.start()
    assert socket_file(mgmt_path)
    reader = Client(mgmt_path)
    try:
        await wait_until(lambda: sim.mgmt_clients() == 1)
        await sim.stop()
        assert not socket_file(mgmt_path)
        assert await reader.frame() == b""
    finally:
        reader.close()


def test_without_a_socket_the_helpers_say_so():
    with pytest.raises(SimulatorError, match="mgmt_socket"):
        BluezSimulator().mgmt_clients()


async def test_standalone_process_serves_the_socket(test_bus: TestBus, mgmt_path, bus):
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    command = ["-m", "ble_scanner.testing.simulator", "--mgmt-socket", mgmt_path]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        *("--scene", "demo", "--period", "0.1"),
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": test_bus.address, "PYTHONPATH": pythonpath},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("bluez simulator ready:") and f"mgmt={mgmt_path}" in line
        reader = Client(mgmt_path)
        try:
            assert_ok(await adapter_call(bus, "StartDiscovery"))
            frame = await reader.frame()
            assert frame[:4] == h("1200 0000")
        finally:
            reader.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 5)
    assert rc == 0
    assert not socket_file(mgmt_path)


async def test_a_scan_response_carries_the_scan_response_flag_alone(msim, client, bus):
    """process_adv_report: a scan response's sender may or may not be connectable."""
    await start_discovery(msim, bus)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01", connectable=False, scan_response=True)
    await msim.advertise(ADAPTER, "C0:00:00:00:00:01", connectable=False)
    assert [f[14:18] for f in await client.until_marker(msim)] == [h("20000000"), h("04000000")]


async def test_an_external_scanner_hides_nothing_from_monitors(msim, client, bus):
    """The controller's reports reach the kernel whoever enabled the scan: with a
    monitor registered they come as Adv Monitor Device Found, as over D-Bus."""
    msim.set_external_scanner(ADAPTER)
    assert_error(await adapter_call(bus, "StartDiscovery"), "org.bluez.Error.InProgress")
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(msim.monitors(ADAPTER)), what="the monitor active")
    assert not msim.is_discovering(ADAPTER)
    assert await msim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert [f[:2] for f in await client.until_marker(msim)] == [h("2f00")]
