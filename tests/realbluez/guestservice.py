"""The service run inside the guest, next to the kernel whose management channel it reads.

The rest of the tier runs the code under test on the host, talking to the
guest's bluetoothd over the relayed bus. The management channel is a kernel
socket (AF_BLUETOOTH, HCI_CHANNEL_CONTROL), so management ingest can only be
tested from inside the guest. :func:`deploy` copies the package and the host's
dbus-fast in over the control channel, without compiled modules (the guest's
Python is another version, so dbus-fast runs as pure Python there); the
service connects to the guest's relayed bus like bluetoothd does, so its name
appears on the host test bus and the tests talk to it from the host.
"""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
import time
from pathlib import Path
from typing import Final

import dbus_fast

from tests.realbluez.vm import Guest, GuestError

ROOT: Final = Path(__file__).resolve().parents[2]
GUEST_DIR: Final = "/opt/scanner"
# The guest agent's bus socket (guest/agent.py BUS_SOCKET): the host test bus.
GUEST_BUS: Final = "unix:path=/run/realbluez/bus"
LOG: Final = "/run/realbluez/scanner.log"
# Copying ~250 kB base64 over the control port and unpacking it under TCG.
DEPLOY_TIMEOUT: Final = 60.0
# Without CAP_NET_ADMIN the kernel refuses the control channel (EPERM). Root
# keeps its uid, so SASL EXTERNAL over the relay (uid 0 on the host) still
# matches; only the capabilities go (an empty bounding set before exec).
DROP_CAPABILITIES: Final = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
# Venus OS's Python has no socket.AF_BLUETOOTH: removing it before the
# service imports anything makes the service open the channel through libc.
WITHOUT_AF_BLUETOOTH: Final = (
    "import runpy, socket, sys; del socket.AF_BLUETOOTH; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _skip_compiled(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = info.name
    if "__pycache__" in name or name.endswith((".so", ".c", ".pyx", ".pxd")):
        return None
    return info


def package_tarball() -> bytes:
    """ble_scanner, dbus_ble_scanner.py and a pure-Python dbus_fast, gzipped."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(ROOT / "ble_scanner", "ble_scanner", filter=_skip_compiled)
        tar.add(ROOT / "dbus_ble_scanner.py", "dbus_ble_scanner.py")
        tar.add(Path(dbus_fast.__file__).parent, "dbus_fast", filter=_skip_compiled)
    return buffer.getvalue()


def deploy(guest: Guest) -> None:
    """The code under test in GUEST_DIR (replacing what an earlier deploy left)."""
    script = f"rm -rf {GUEST_DIR} && mkdir -p {GUEST_DIR} && base64 -d | tar xz -C {GUEST_DIR}"
    reply = guest.control.request(
        "run",
        timeout=DEPLOY_TIMEOUT + 5,
        argv=["sh", "-c", script],
        limit=DEPLOY_TIMEOUT,
        input=base64.b64encode(package_tarball()).decode(),
    )
    if reply.get("rc") != 0:
        raise GuestError(f"deploying the service into the guest failed: {reply}")


class GuestService:
    """``dbus_ble_scanner.py ARGS`` as its own process in the guest, on the relayed bus."""

    def __init__(
        self,
        guest: Guest,
        *args: str,
        capabilities: bool = True,
        af_bluetooth: bool = True,
    ) -> None:
        self.guest = guest
        self.args = args
        self.capabilities = capabilities
        self.af_bluetooth = af_bluetooth
        self.pid = 0

    def command(self) -> list[str]:
        python = ["python3"] if self.af_bluetooth else ["python3", "-c", WITHOUT_AF_BLUETOOTH]
        argv = [*python, "dbus_ble_scanner.py", *self.args]
        return argv if self.capabilities else [*DROP_CAPABILITIES, *argv]

    def start(self) -> None:
        command = " ".join(shlex.quote(word) for word in self.command())
        script = (
            f"cd {GUEST_DIR} && DBUS_SYSTEM_BUS_ADDRESS={shlex.quote(GUEST_BUS)}"
            f" PYTHONDONTWRITEBYTECODE=1 setsid {command} >{LOG} 2>&1 </dev/null & echo $!"
        )
        self.pid = int(self.guest.run("sh", "-c", script).check().out.strip())

    def running(self) -> bool:
        """Alive: neither gone nor a zombie (the agent, PID 1, does not reap it)."""
        state = self.guest.run("sh", "-c", f"cut -d' ' -f3 /proc/{self.pid}/stat 2>/dev/null")
        return state.out.strip() not in ("", "Z")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, and wait until it has exited."""
        if not self.pid:
            return
        self.guest.run("kill", "-TERM", str(self.pid))
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                self.guest.run("kill", "-KILL", str(self.pid))
                raise AssertionError(f"the guest's service did not stop:\n{self.log()}")
            time.sleep(0.1)
        self.pid = 0

    def log(self) -> str:
        return self.guest.run("cat", LOG).out


def guest_python(guest: Guest) -> str:
    """The guest's Python, and whether it has socket.AF_BLUETOOTH (for messages)."""
    code = "import socket, sys; print(sys.version.split()[0], hasattr(socket, 'AF_BLUETOOTH'))"
    return guest.run("python3", "-c", code).check().out.strip()


__all__ = ["GuestService", "deploy", "guest_python"]
