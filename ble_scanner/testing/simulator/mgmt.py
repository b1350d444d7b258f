"""The kernel's management channel as the simulator serves it: frames and the socket.

The service can read advertisements from the kernel's Bluetooth management
channel instead of bluetoothd's per-report ``PropertiesChanged``. In tests it
connects to a Unix ``SOCK_SEQPACKET`` socket that this module serves, one
datagram per kernel event, byte for byte as the control socket would deliver
it. The encoders are written from BlueZ's ``doc/mgmt-api.txt`` and the
kernel's ``net/bluetooth/mgmt.c``, separately from the service's parser
(``ble_scanner/bluez/mgmt.py``), so that each checks the other.

Which reports become frames is decided by the kernel's model (``kernel.py``);
this module only encodes and delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections import Counter, deque

from .report import AD_NAME_COMPLETE, Report

# Event codes (doc/mgmt-api.txt).
EV_DEVICE_CONNECTED = 0x000B
EV_DEVICE_DISCONNECTED = 0x000C
EV_DEVICE_FOUND = 0x0012
EV_ADV_MONITOR_DEVICE_FOUND = 0x002F

# Address_Type values for LE addresses.
ADDRESS_TYPES = {"public": 1, "random": 2}

# Device Found flags: bit 2 Not Connectable, bit 5 Scan Response.
FOUND_NOT_CONNECTABLE = 1 << 2
FOUND_SCAN_RESPONSE = 1 << 5
# Device Connected flags: bit 3 Initiated Connection (this host was central).
CONNECTED_INITIATED = 1 << 3
# Device Disconnected reason 2: "Connection terminated by local host".
DISCONNECT_LOCAL_HOST = 0x02

# "a value of 127 indicates that the RSSI is not available".
RSSI_UNAVAILABLE = 127
# Monitor handle 0: no controller offload, every report goes to bluetoothd's
# software matching (mgmt_adv_monitor_device_found without MSFT support).
MONITOR_HANDLE_SOFTWARE = 0

# An AD structure's length octet covers its type octet too: 254 data bytes at most.
AD_DATA_MAX = 254
# What a name too long for one AD structure is sent as (cut to AD_DATA_MAX).
AD_NAME_SHORT = 0x08

# Frames held for a client whose socket is full, beyond the socket's own queue
# (net.unix.max_dgram_qlen datagrams); past this, frames are dropped and counted,
# as the kernel drops events for a control socket whose receive buffer is full.
CLIENT_QUEUE_LIMIT = 4096
# Bytes a client's socket may buffer; the kernel caps it at net.core.wmem_max.
CLIENT_SNDBUF = 1 << 20

_HEADER = struct.Struct("<HHH")
# Device Found parameters before the EIR: address, type, RSSI, flags, EIR length.
_FOUND = struct.Struct("<6sBbIH")
# The header of Adv Monitor Device Found with the monitor handle that leads its parameters.
_MONITOR_HEADER = struct.Struct("<HHHH")
_CONNECTED = struct.Struct("<HHH6sBIH")
_DISCONNECTED = struct.Struct("<HHH6sBB")


def controller_index(adapter: str) -> int | None:
    """``hciN`` → N, the Controller Index of its events; None for other names."""
    digits = adapter[3:]
    if adapter.startswith("hci") and digits.isdigit():
        return int(digits)
    return None


def address_bytes(address: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` → six bytes, least significant first (bdaddr_t)."""
    return bytes.fromhex(address.replace(":", ""))[::-1]


def ad_data(structures: list[tuple[int, bytes]]) -> bytes:
    """AD structures on air: length (type + data), type, data; over-long data cut."""
    out = bytearray()
    for ad_type, data in structures:
        if len(data) > AD_DATA_MAX:
            if ad_type == AD_NAME_COMPLETE:
                ad_type = AD_NAME_SHORT
            data = data[:AD_DATA_MAX]
        out.append(len(data) + 1)
        out.append(ad_type)
        out += data
    return bytes(out)


def report_eir(report: Report) -> bytes:
    """The report's AD data as the controller delivers it, built once per Report."""
    eir = report.eir_cache
    if eir is None:
        eir = report.eir_cache = ad_data(report.ad_structures())
    return eir


def _rssi(value: int | None) -> int:
    return RSSI_UNAVAILABLE if value is None else value


def found_flags(report: Report) -> int:
    """A scan response carries Scan Response alone: hci_event.c's process_adv_report
    cannot tell whether its sender is connectable (before the kernel gained
    MGMT_DEV_FOUND_SCAN_RSP in 2023 it marked it Not Connectable instead)."""
    if report.scan_response:
        return FOUND_SCAN_RESPONSE
    return 0 if report.connectable else FOUND_NOT_CONNECTABLE


def device_found(index: int, report: Report, monitor_handle: int | None = None) -> bytes:
    """``Device Found`` (0x0012) for one advertising report, or with a monitor handle
    ``Adv Monitor Device Found`` (0x002F): the handle, then the same fields."""
    eir = report_eir(report)
    params = (
        _FOUND.pack(
            address_bytes(report.address),
            ADDRESS_TYPES.get(report.address_type, 1),
            _rssi(report.rssi),
            found_flags(report),
            len(eir),
        )
        + eir
    )
    if monitor_handle is None:
        return _HEADER.pack(EV_DEVICE_FOUND, index, len(params)) + params
    return (
        _MONITOR_HEADER.pack(EV_ADV_MONITOR_DEVICE_FOUND, index, 2 + len(params), monitor_handle)
        + params
    )


def device_connected(
    index: int, address: str, address_type: str, eir: bytes = b"", flags: int = CONNECTED_INITIATED
) -> bytes:
    """``Device Connected`` (0x000B): address, type, flags, EIR."""
    return (
        _CONNECTED.pack(
            EV_DEVICE_CONNECTED,
            index,
            _CONNECTED.size - _HEADER.size + len(eir),
            address_bytes(address),
            ADDRESS_TYPES.get(address_type, 1),
            flags,
            len(eir),
        )
        + eir
    )


def device_disconnected(
    index: int, address: str, address_type: str, reason: int = DISCONNECT_LOCAL_HOST
) -> bytes:
    """``Device Disconnected`` (0x000C): address, type, reason."""
    return _DISCONNECTED.pack(
        EV_DEVICE_DISCONNECTED,
        index,
        _DISCONNECTED.size - _HEADER.size,
        address_bytes(address),
        ADDRESS_TYPES.get(address_type, 1),
        reason,
    )


class _Client:
    __slots__ = ("queue", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.queue: deque[bytes] = deque()
        self.writing = False


class MgmtChannel:
    """The Unix ``SOCK_SEQPACKET`` socket: every connected client gets every frame.

    Sending never blocks the simulator: a frame that does not fit a client's
    socket waits in that client's queue (at most ``queue_limit`` frames) and
    is dropped beyond it (``dropped``).
    """

    def __init__(self, path: str, queue_limit: int = CLIENT_QUEUE_LIMIT) -> None:
        self.path = path
        self.queue_limit = queue_limit
        self.sent: Counter[int] = Counter()
        self.dropped = 0
        self._clients: dict[int, _Client] = {}
        # The clients as a tuple, rebuilt on connect and disconnect: ``send`` runs
        # for every report and iterates it without copying.
        self._targets: tuple[tuple[int, _Client], ...] = ()
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set whenever a client's queue empties or a client goes: ``drain`` looks again.
        self._drained = asyncio.Event()

    @property
    def clients(self) -> int:
        """Connected clients, including those the listening socket has queued but the
        loop has not accepted yet: a client's connect() has returned, so it is owed
        every frame from then on, as a bound control socket is the kernel's events.
        (Counting only accepted ones dropped a report sent between a service's connect
        and the loop's accept, which the real kernel never does.)"""
        self._accept()
        return len(self._clients)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start_listening(self) -> None:
        """Create the socket file (a stale socket at the path is replaced)."""
        if self._listener is not None:
            return
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(self.path)
            listener.listen(16)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept)

    def stop_listening(self) -> None:
        """Nobody can connect any more (the path is gone); connected clients stay."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(listener.fileno())
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def backlog(self) -> int:
        """Frames waiting for clients that read: a full queue is a client that does
        not, and is not waited for (it stalls nobody; its frames are dropped)."""
        limit = self.queue_limit
        return sum(len(c.queue) for _, c in self._targets if len(c.queue) < limit)

    async def drain(self) -> None:
        """Wait until every frame sent so far is in its client's socket (or the client
        is gone, or not reading): a bulk sender that drains now and then loses
        nothing to a reader that keeps up, as ``BluezSimulator.drain`` does for D-Bus."""
        while self.backlog():
            self._drained.clear()
            await self._drained.wait()

    def disconnect_clients(self) -> None:
        """Every client's connection ends (the channel failed)."""
        for fd in list(self._clients):
            self._drop(fd)

    def close(self) -> None:
        self.stop_listening()
        self.disconnect_clients()

    def send(self, frame: bytes, code: int) -> None:
        """One event to every client; ``code`` is what ``sent`` counts it under."""
        self.sent[code] += 1
        for fd, client in self._targets:
            if client.queue:
                if len(client.queue) >= self.queue_limit:
                    self.dropped += 1
                else:
                    client.queue.append(frame)
                    if len(client.queue) >= self.queue_limit:
                        self._drained.set()  # full: no longer waited for
                continue
            try:
                client.sock.send(frame)
            except BlockingIOError:
                client.queue.append(frame)
                self._want_write(fd, client)
            except OSError:
                self._drop(fd)

    # --- sockets -----------------------------------------------------------

    def _accept(self) -> None:
        """Every connection waiting on the listening socket."""
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)
            fd = sock.fileno()
            self._clients[fd] = _Client(sock)
            self._targets = tuple(self._clients.items())
            assert self._loop is not None
            self._loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        """Commands are not answered: what a client sends is read and discarded;
        end of file or an error ends the client."""
        client = self._clients.get(fd)
        try:
            ended = client is not None and not client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            ended = False
        except OSError:
            ended = True
        if ended:
            self._drop(fd)

    def _want_write(self, fd: int, client: _Client) -> None:
        if not client.writing:
            client.writing = True
            assert self._loop is not None
            self._loop.add_writer(fd, self._writable, fd)

    def _writable(self, fd: int) -> None:
        client = self._clients.get(fd)
        if client is None:
            return
        queue = client.queue
        try:
            while queue:
                client.sock.send(queue[0])
                queue.popleft()
        except BlockingIOError:
            return
        except OSError:
            self._drop(fd)
            return
        client.writing = False
        assert self._loop is not None
        self._loop.remove_writer(fd)
        self._drained.set()

    def _drop(self, fd: int) -> None:
        client = self._clients.pop(fd, None)
        if client is None:
            return
        self._targets = tuple(self._clients.items())
        self._drained.set()
        assert self._loop is not None
        self._loop.remove_reader(fd)
        if client.writing:
            self._loop.remove_writer(fd)
        client.sock.close()
