"""The kernel's Bluetooth management channel, read on the event loop.

The socket is what btmgmt opens: ``AF_BLUETOOTH``, ``SOCK_RAW``,
``BTPROTO_HCI``, bound to no controller on ``HCI_CHANNEL_CONTROL``. Every
open control socket receives every event (the kernel's net/bluetooth/mgmt.c
``mgmt_event`` sends to every trusted socket on the channel), so reading it
does not disturb bluetoothd, which keeps the radio. It needs
CAP_NET_ADMIN. Venus OS's Python is built without ``socket.AF_BLUETOOTH``:
there the socket is made and bound through libc with ctypes and the
descriptor wrapped in a ``socket.socket``. For tests, a Unix
``SOCK_SEQPACKET`` socket at a path (the simulator's seam) speaks the same
frames.

Frames are parsed by ``mgmt.py``; malformed ones are counted and dropped,
never the end of the channel. EOF or a socket error is: ``on_lost`` is
called once, so that the BlueZ side falls back to D-Bus ingest.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Final, Protocol

from . import mgmt

_LOGGER = logging.getLogger(__name__)

AF_BLUETOOTH: Final = 31  # linux/socket.h
BTPROTO_HCI: Final = 1  # net/bluetooth/bluetooth.h
HCI_DEV_NONE: Final = 0xFFFF  # no controller: the control channel is for all of them
HCI_CHANNEL_CONTROL: Final = 3  # net/bluetooth/hci.h
CAP_NET_ADMIN: Final = 12  # linux/capability.h: a trusted control socket needs it
# The largest datagram a frame header can describe: a bigger buffer never
# truncates one, so a bad length is seen as a bad length.
READ_SIZE: Final = mgmt.HEADER.size + 0xFFFF
# Datagrams read per wake-up before the loop gets a turn: a burst is drained
# in few system calls, and D-Bus calls still answer during a flood.
MAX_PER_WAKE: Final = 256


class _SockaddrHci(ctypes.Structure):
    """``struct sockaddr_hci`` (net/bluetooth/hci_sock.h)."""

    _fields_ = [
        ("hci_family", ctypes.c_ushort),
        ("hci_dev", ctypes.c_ushort),
        ("hci_channel", ctypes.c_ushort),
    ]


def _libc_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def _bind_control(fd: int) -> None:
    """bind(2) to HCI_CHANNEL_CONTROL through libc: Python's own bind may not take a channel."""
    libc = ctypes.CDLL(None, use_errno=True)
    address = _SockaddrHci(AF_BLUETOOTH, HCI_DEV_NONE, HCI_CHANNEL_CONTROL)
    if libc.bind(fd, ctypes.byref(address), ctypes.sizeof(address)) != 0:
        raise _libc_error("bind to the Bluetooth management channel")


def _require_trust() -> None:
    """EPERM unless we hold CAP_NET_ADMIN.

    Without it the kernel still binds the control socket, but untrusted: it is
    sent no Device Found (net/bluetooth/hci_sock.c hci_sock_bind, mgmt events
    go to HCI_SOCK_TRUSTED sockets only), so the channel would be open and deaf.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        effective = int(fields["CapEff"].strip(), 16)
    except (OSError, KeyError, ValueError):
        return  # cannot tell: trust the bind
    if not effective >> CAP_NET_ADMIN & 1:
        raise PermissionError(errno.EPERM, "no CAP_NET_ADMIN: the kernel sends no advertisements")


def open_control_socket(use_libc: bool | None = None) -> socket.socket:
    """The kernel's control channel, non-blocking; OSError (e.g. EAFNOSUPPORT, EPERM) if not.

    ``use_libc``: make the socket through libc (None: only where Python has no
    ``socket.AF_BLUETOOTH``, as on Venus OS).
    """
    if use_libc is None:
        use_libc = not hasattr(socket, "AF_BLUETOOTH")
    kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    if use_libc:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(AF_BLUETOOTH, kind, BTPROTO_HCI)
        if fd < 0:
            raise _libc_error("Bluetooth management socket")
        try:
            _bind_control(fd)
            _require_trust()
        except OSError:
            os.close(fd)
            raise
        # Family, type and protocol given: socket.socket(fileno=) would ask
        # getsockname(), which a control socket (no controller) refuses: EBADFD.
        return socket.socket(AF_BLUETOOTH, kind, BTPROTO_HCI, fileno=fd)
    sock = socket.socket(AF_BLUETOOTH, kind, BTPROTO_HCI)
    try:
        _bind_control(sock.fileno())
        _require_trust()
    except OSError:
        sock.close()
        raise
    return sock


def open_seam(path: str) -> socket.socket:
    """A Unix SOCK_SEQPACKET connection to a simulator serving the same frames."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class WakeUp(Protocol):
    """Told around each wake-up's frames (the outbox: their signals in one write)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class MgmtChannel:
    """Reads frames as they come and hands each parsed event on."""

    def __init__(
        self,
        on_event: Callable[[mgmt.Event], None],
        on_lost: Callable[[str], None],
        seam: str = "",
        wake_up: WakeUp | None = None,
    ) -> None:
        """``seam``: a Unix socket path to read instead of the kernel ("" reads the kernel)."""
        self.on_event = on_event
        self.on_lost = on_lost
        self.seam = seam
        self.wake_up = wake_up
        self.sock: socket.socket | None = None

    @property
    def source(self) -> str:
        return self.seam or "the kernel's management channel"

    def open(self) -> None:
        """Open and start reading; raises OSError with the reason when it cannot."""
        sock = open_seam(self.seam) if self.seam else open_control_socket()
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        _LOGGER.info("reading advertisements from %s", self.source)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        wake_up = self.wake_up
        if wake_up is None:
            self._read(sock)
            return
        wake_up.hold()
        try:
            self._read(sock)
        finally:
            wake_up.release()

    def _read(self, sock: socket.socket) -> None:
        on_event = self.on_event
        for _ in range(MAX_PER_WAKE):
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc.strerror or str(exc))
                return
            if not data:
                self._lost("end of file")
                return
            try:
                on_event(mgmt.parse_frame(data))
            except Exception:
                # Nothing one report does may end the channel.
                _LOGGER.exception("error handling a management frame")

    def _lost(self, reason: str) -> None:
        if self.sock is None:
            return
        self.close()
        _LOGGER.warning("%s failed: %s", self.source, reason)
        self.on_lost(reason)


def describe(exc: OSError) -> str:
    """Why the channel could not be opened, in words a user can act on."""
    code = exc.errno
    if code in (errno.EPERM, errno.EACCES):
        return f"{exc.strerror} (needs CAP_NET_ADMIN: run as root)"
    if code == errno.EAFNOSUPPORT:
        return f"{exc.strerror} (this kernel has no Bluetooth)"
    return exc.strerror or str(exc)
