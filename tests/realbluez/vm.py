"""Host side of the real-BlueZ tier: boot the QEMU guest and bridge its bluetoothd to a host bus.

The guest (built by ``build-guest.sh``) runs Debian's bluetoothd on two btvirt
controllers. Its D-Bus connections are multiplexed over one virtio-serial port
(see ``guest/agent.py``); :class:`BusRelay` opens one connection to the host's
private test bus per guest connection, as root, so SASL EXTERNAL with uid 0
matches what bluetoothd says. ``org.bluez`` therefore lives on the host test
bus and every host-side client (the service, bleak, busctl) talks to the real
bluetoothd exactly as it would on a device. A second port carries a JSON-lines
control channel (run a command, start or stop bluetoothd).

Usable on its own for poking at a guest by hand::

    python -m tests.realbluez.vm bookworm    # boots, prints the bus address, waits
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from ble_scanner.testing.testbus import TestBus

HERE: Final = Path(__file__).resolve().parent
BUILD_SCRIPT: Final = HERE / "build-guest.sh"
SUITES: Final = ("bookworm", "trixie")

# TCG boot measured at 14-15 s to both adapters on an idle 2-core machine
# (tests/README.md "The real-BlueZ tier"); other tests share the cores: allow 8x,
# and time for the guest agent to start btvirt again when a controller's setup
# timed out under that load (guest/agent.py), as seen at a load average of 9.
BOOT_TIMEOUT: Final = 240.0
# bluetoothd start measured at 1.4 s; same margin.
BLUETOOTHD_TIMEOUT: Final = 30.0
# A control command is a short btmgmt/hciconfig call; TCG makes each ~0.1-0.5 s.
CONTROL_TIMEOUT: Final = 30.0
# The project's constraint for this machine: 2 cores shared with others.
QEMU_CPUS: Final = "2"
QEMU_MEMORY: Final = "1024"

_OPEN, _DATA, _CLOSE = 1, 2, 3
_HEADER: Final = struct.Struct(">BII")


class GuestError(RuntimeError):
    """The guest could not be built, booted or commanded."""


def build_guest(suite: str) -> Path:
    """Build (or reuse from the cache) the image for ``suite`` and return its directory."""
    if suite not in SUITES:
        raise GuestError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    proc = subprocess.run([str(BUILD_SCRIPT), suite], capture_output=True, text=True)
    if proc.returncode != 0:
        raise GuestError(
            f"building the {suite} guest failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


class BusRelay(threading.Thread):
    """Demultiplexes the guest's bus connections onto fresh connections to the host bus."""

    def __init__(self, chardev: socket.socket, bus_socket: str) -> None:
        super().__init__(name="realbluez-bus-relay", daemon=True)
        self.chardev = chardev
        self.bus_socket = bus_socket
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, socket.socket] = {}
        self.opened = 0
        self._stop_r, self._stop_w = socket.socketpair()
        self._write_lock = threading.Lock()

    def stop(self) -> None:
        self._stop_w.send(b"x")
        self.join(5)

    def _send_frame(self, kind: int, cid: int, payload: bytes = b"") -> None:
        with self._write_lock:
            self.chardev.sendall(_HEADER.pack(kind, cid, len(payload)) + payload)

    def _close(self, cid: int, tell_guest: bool) -> None:
        conn = self.conns.pop(cid, None)
        if conn is None:
            return
        self.selector.unregister(conn)
        conn.close()
        if tell_guest:
            self._send_frame(_CLOSE, cid)

    def run(self) -> None:
        self.selector.register(self.chardev, selectors.EVENT_READ, None)
        self.selector.register(self._stop_r, selectors.EVENT_READ, "stop")
        buf = b""
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.data == "stop":
                        return
                    if key.data is None:
                        chunk = self.chardev.recv(65536)
                        if not chunk:
                            return  # QEMU went away
                        buf += chunk
                        buf = self._handle_frames(buf)
                    else:
                        cid = key.data
                        conn = self.conns[cid]
                        try:
                            data = conn.recv(65536)
                        except OSError:
                            data = b""
                        if data:
                            self._send_frame(_DATA, cid, data)
                        else:
                            self._close(cid, tell_guest=True)
        except OSError:
            return
        finally:
            for cid in list(self.conns):
                self._close(cid, tell_guest=False)

    def _handle_frames(self, buf: bytes) -> bytes:
        while len(buf) >= _HEADER.size:
            kind, cid, length = _HEADER.unpack_from(buf)
            if len(buf) < _HEADER.size + length:
                break
            payload = buf[_HEADER.size : _HEADER.size + length]
            buf = buf[_HEADER.size + length :]
            if kind == _OPEN:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.connect(self.bus_socket)
                except OSError:
                    conn.close()
                    self._send_frame(_CLOSE, cid)
                    continue
                self.conns[cid] = conn
                self.opened += 1
                self.selector.register(conn, selectors.EVENT_READ, cid)
            elif kind == _DATA:
                conn_or_none = self.conns.get(cid)
                if conn_or_none is not None:
                    try:
                        conn_or_none.sendall(payload)
                    except OSError:
                        self._close(cid, tell_guest=True)
            elif kind == _CLOSE:
                self._close(cid, tell_guest=False)
        return buf


class Control(threading.Thread):
    """JSON-lines request/reply over the control port; safe to call from several threads."""

    def __init__(self, chardev: socket.socket) -> None:
        super().__init__(name="realbluez-control", daemon=True)
        self.chardev = chardev
        self.ids = itertools.count(1)
        self.pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self.ready: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.lock = threading.Lock()
        self.closed = False

    def run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.chardev.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == "ready" and not self.ready.done():
                    self.ready.set_result(msg)
                future = self.pending.pop(msg.get("id"), None) if msg.get("id") else None
                if future is not None:
                    future.set_result(msg)
        self.closed = True
        error = GuestError("the guest's control channel closed (QEMU exited?)")
        if not self.ready.done():
            self.ready.set_exception(error)
        for future in list(self.pending.values()):
            future.set_exception(error)

    def request(self, op: str, timeout: float = CONTROL_TIMEOUT, **args: Any) -> dict[str, Any]:
        if self.closed:
            raise GuestError("the guest's control channel is closed")
        rid = next(self.ids)
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.pending[rid] = future
        with self.lock:
            self.chardev.sendall((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            self.pending.pop(rid, None)
            raise GuestError(f"guest did not answer {op} {args} within {timeout} s") from None


@dataclass(frozen=True, slots=True)
class Result:
    rc: int
    out: str
    err: str

    def check(self) -> Result:
        if self.rc != 0:
            raise GuestError(f"guest command failed ({self.rc}): {self.out}{self.err}")
        return self


@dataclass
class Guest:
    """A booted guest whose bluetoothd owns ``org.bluez`` on ``bus``."""

    suite: str
    bus: TestBus
    image: Path
    process: subprocess.Popen[bytes]
    directory: str
    control: Control
    relay: BusRelay
    info: dict[str, Any] = field(default_factory=dict)
    boot_seconds: float = 0.0
    experimental: bool = True

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def boot(cls, suite: str, bus: TestBus, timeout: float = BOOT_TIMEOUT) -> Guest:
        image = build_guest(suite)  # also installs qemu and friends when missing
        if shutil.which("qemu-system-x86_64") is None:
            raise GuestError(
                "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
            )
        start = time.monotonic()
        directory = tempfile.mkdtemp(prefix="realbluez-", dir="/tmp")  # 0700: the relay is root
        bus_sock = os.path.join(directory, "bus.sock")
        ctl_sock = os.path.join(directory, "ctl.sock")
        console = os.path.join(directory, "console.log")
        argv = [
            "qemu-system-x86_64",
            "-accel", "tcg",  # KVM hangs Debian's kernel here (tests/README.md)
            "-smp", QEMU_CPUS,
            "-m", QEMU_MEMORY,
            "-nic", "none",
            "-display", "none",
            "-no-reboot",
            "-kernel", str(image / "vmlinuz"),
            "-initrd", str(image / "initrd.img"),
            "-append",
            "console=ttyS0 root=/dev/vda rw init=/opt/realbluez/init panic=-1 quiet",
            "-drive", f"file={image / 'disk.img'},format=raw,if=virtio,snapshot=on",
            "-serial", f"file:{console}",
            "-chardev", f"socket,id=bus,path={bus_sock},server=on,wait=off",
            "-chardev", f"socket,id=ctl,path={ctl_sock},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=bus,name=realbluez.bus",
            "-device", "virtserialport,chardev=ctl,name=realbluez.control",
        ]  # fmt: skip
        qemu_log = open(os.path.join(directory, "qemu.log"), "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        qemu_log.close()
        try:
            bus_chardev = _connect_when_listening(bus_sock, process, 30)
            ctl_chardev = _connect_when_listening(ctl_sock, process, 30)
        except BaseException:
            _kill(process)
            raise
        relay = BusRelay(bus_chardev, bus.socket_path)
        relay.start()
        control = Control(ctl_chardev)
        control.start()
        guest = cls(suite, bus, image, process, directory, control, relay)
        try:
            guest.info = control.ready.result(timeout)
            guest.wait_for_adapters(deadline=start + timeout)
        except BaseException as exc:
            tail = guest.console_tail()
            if isinstance(exc, GuestError):
                exc.add_note(f"bluetoothd's log:\n{guest.bluetoothd_log_if_any()}")
            guest.shutdown()
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise GuestError(
                    f"{suite} guest not ready within {timeout} s; console:\n{tail}"
                ) from None
            raise
        guest.boot_seconds = time.monotonic() - start
        return guest

    def shutdown(self) -> None:
        if self.process.poll() is None:
            try:
                self.control.request("poweroff", timeout=5)
            except GuestError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                _kill(self.process)
        self.relay.stop()
        for sock in (self.relay.chardev, self.control.chardev):
            sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def console_tail(self, chars: int = 4000) -> str:
        try:
            with open(os.path.join(self.directory, "console.log"), errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return "(no console log)"

    # -- facts ----------------------------------------------------------------------------

    @property
    def bluez_version(self) -> tuple[int, int]:
        major, minor = str(self.info["bluez_version"]).split(".")[:2]
        return int(major), int(minor)

    @property
    def kernel(self) -> str:
        return str(self.info["kernel"])

    # -- commands -------------------------------------------------------------------------

    def run(self, *argv: str, timeout: float = CONTROL_TIMEOUT) -> Result:
        """Run a command in the guest; returns its exit status and output."""
        reply = self.control.request("run", timeout=timeout + 5, argv=list(argv), limit=timeout)
        return Result(int(reply["rc"]), str(reply.get("out", "")), str(reply.get("err", "")))

    def btmgmt(self, *args: str, index: int = 1) -> Result:
        return self.run("btmgmt", "--index", str(index), *args)

    def advertise(
        self,
        data: bytes,
        *,
        scan_response: bytes = b"",
        connectable: bool = True,
        instance: int = 1,
        index: int = 1,
    ) -> None:
        """(Re)place advertising instance ``instance`` on hci<index> with ``data`` (AD structures).

        Connectable advertising uses the controller's public address (one Device1
        that gets PropertiesChanged); non-connectable uses a new random address
        each time.
        """
        args = ["add-adv"] + (["-c"] if connectable else []) + ["-d", data.hex()]
        if scan_response:
            args += ["-s", scan_response.hex()]
        args.append(str(instance))
        result = self.btmgmt(*args, index=index)
        if result.rc != 0 or "failed" in (result.out + result.err).lower():
            raise GuestError(f"btmgmt add-adv failed: {result}")

    def stop_advertising(self, instance: int = 1, index: int = 1) -> None:
        self.btmgmt("rm-adv", str(instance), index=index)

    def start_bluetoothd(self, experimental: bool = True, *args: str, wait: bool = True) -> None:
        reply = self.control.request("start_bluetoothd", experimental=experimental, args=list(args))
        if reply.get("rc") != 0:
            raise GuestError(f"starting bluetoothd failed: {reply}")
        self.experimental = experimental
        if wait:
            self.wait_for_adapters(deadline=time.monotonic() + BLUETOOTHD_TIMEOUT)

    def stop_bluetoothd(self, sig: str = "SIGTERM") -> None:
        """Stop bluetoothd (SIGTERM: orderly; SIGKILL: a crash) and wait for it to exit."""
        self.control.request("stop_bluetoothd", signal=sig)

    def kill_bluetoothd(self) -> None:
        self.stop_bluetoothd("SIGKILL")

    def restart_bluetoothd(self, experimental: bool = True, *args: str, wait: bool = True) -> None:
        self.stop_bluetoothd()
        self.start_bluetoothd(experimental, *args, wait=wait)

    def bluetoothd_log(self) -> str:
        return self.run("cat", "/run/realbluez/bluetoothd.log").out

    def bluetoothd_log_if_any(self) -> str:
        """bluetoothd's log for an error message; the reason when it cannot be read."""
        try:
            return self.bluetoothd_log()[-4000:]
        except GuestError as exc:
            return f"(not readable: {exc})"

    def wait_for_adapters(
        self, names: tuple[str, ...] = ("hci0", "hci1"), *, deadline: float
    ) -> None:
        """Block until ``org.bluez`` on the host bus has ``names`` powered."""
        _run_async(_wait_for_adapters(self.bus.address, names, deadline))


def _run_async(coro: Any) -> Any:
    # Callers may be inside a running loop (pytest-asyncio); keep ours separate.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _wait_for_adapters(address: str, names: tuple[str, ...], deadline: float) -> None:
    bus = await asyncio.wait_for(
        MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect(), 10
    )
    last: object = None
    try:
        while True:
            reply = await asyncio.wait_for(
                bus.call(
                    Message(
                        destination="org.bluez",
                        path="/",
                        interface="org.freedesktop.DBus.ObjectManager",
                        member="GetManagedObjects",
                    )
                ),
                10,
            )
            if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
                objects = reply.body[0]
                powered = {
                    path.rsplit("/", 1)[-1]
                    for path, ifaces in objects.items()
                    if "org.bluez.Adapter1" in ifaces
                    and ifaces["org.bluez.Adapter1"]["Powered"].value
                }
                if set(names) <= powered:
                    return
                last = sorted(powered)
            else:
                last = reply.error_name if reply is not None else None
            if time.monotonic() > deadline:
                raise GuestError(f"adapters {names} not powered on org.bluez in time; last: {last}")
            await asyncio.sleep(0.2)
    finally:
        bus.disconnect()


def _connect_when_listening(
    path: str, process: subprocess.Popen[bytes], timeout: float
) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
        if process.poll() is not None:
            raise GuestError(f"QEMU exited with {process.returncode} before listening on {path}")
        if time.monotonic() > deadline:
            raise GuestError(f"QEMU did not create {path} within {timeout} s")
        time.sleep(0.02)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    import argparse

    from ble_scanner.testing.testbus import start_test_bus

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=SUITES)
    args = parser.parse_args()
    with start_test_bus() as bus:
        guest = Guest.boot(args.suite, bus)
        print(
            f"BlueZ {guest.info['bluez_version']} ({args.suite}, kernel {guest.kernel}) ready "
            f"in {guest.boot_seconds:.1f} s"
        )
        print(f"export DBUS_SYSTEM_BUS_ADDRESS='{bus.address}'")
        print("Ctrl-C to stop")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            guest.shutdown()


if __name__ == "__main__":
    main()
