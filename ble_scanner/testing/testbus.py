"""A private dbus-daemon with a system-like policy, for tests, the demo and benchmarks.

Deny by default like Debian's /usr/share/dbus-1/system.conf, with the policy
files in a ``system.d`` folder of its own: ``org.bluez`` (BlueZ's
bluetooth.conf), our service, and localsettings. Readiness is the address the
daemon prints once its socket listens, so nothing sleeps.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Final

# dbus-daemon exits on SIGTERM at once; a daemon that does not within this is stuck.
STOP_TIMEOUT: Final = 3.0
# --print-address writes one line: the address, well under a page.
READY_LINE_MAX: Final = 4096
_CONFIG_NAME: Final = "system-like.conf"
_SYSTEM_CONF: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <includedir>{confdir}</includedir>
</busconfig>
"""

# BlueZ's src/bluetooth.conf: root owns org.bluez and may call back into the
# interfaces clients export (monitors, agents); everyone may call org.bluez.
BLUEZ_POLICY: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.bluez"/>
    <allow send_destination="org.bluez"/>
    <allow send_interface="org.bluez.AdvertisementMonitor1"/>
    <allow send_interface="org.bluez.Agent1"/>
    <allow send_interface="org.bluez.LEAdvertisement1"/>
    <allow send_interface="org.freedesktop.DBus.ObjectManager"/>
    <allow send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.bluez"/>
  </policy>
</busconfig>
"""

# Venus's localsettings on a distribution with a policy-enforcing bus.
SETTINGS_POLICY: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="com.victronenergy.settings"/>
  </policy>
  <policy context="default">
    <allow send_destination="com.victronenergy.settings"/>
  </policy>
</busconfig>
"""


def scanner_policy() -> str:
    """Our own policy file, as shipped for /etc/dbus-1/system.d/."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(package, "data", "com.victronenergy.ble.scanner.conf")) as f:
        return f.read()


@dataclass
class TestBus:
    """A running private bus; ``address`` goes into DBUS_SYSTEM_BUS_ADDRESS."""

    __test__ = False  # not a pytest test class

    address: str
    directory: str
    process: subprocess.Popen[bytes]
    extra_policies: dict[str, str] = field(default_factory=dict)
    quiet: bool = False

    @property
    def socket_path(self) -> str:
        return os.path.join(self.directory, "bus")

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, _CONFIG_NAME)

    def kill(self) -> None:
        """The daemon dies at once (SIGKILL), as a crash or an upgrade's restart looks
        to its clients: every connection ends, the socket file stays."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Kill the daemon (if running) and start a new one at the same address."""
        self.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a killed daemon leaves it; bind() would fail
        self.process, self.address = _spawn_daemon(
            self.config_path, self.socket_path, timeout, self.quiet
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> TestBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_test_bus(
    extra_policies: dict[str, str] | None = None, timeout: float = 10.0, quiet: bool = False
) -> TestBus:
    """Start ``dbus-daemon`` with the system-like policy and return once it listens.

    The directory lives in /tmp with a short name: AF_UNIX paths are limited to
    107 bytes, which pytest's tmp_path can exceed. It is world-readable so that
    tests running a client as an unprivileged uid can reach the socket.
    """
    directory = tempfile.mkdtemp(prefix="blebus-", dir="/tmp")
    os.chmod(directory, 0o755)
    confdir = os.path.join(directory, "system.d")
    os.mkdir(confdir)
    policies = {
        "bluetooth.conf": BLUEZ_POLICY,
        "com.victronenergy.settings.conf": SETTINGS_POLICY,
        "com.victronenergy.ble.scanner.conf": scanner_policy(),
    }
    policies.update(extra_policies or {})
    for name, text in policies.items():
        with open(os.path.join(confdir, name), "w") as f:
            f.write(text)
    socket_path = os.path.join(directory, "bus")
    config = os.path.join(directory, _CONFIG_NAME)
    with open(config, "w") as f:
        f.write(_SYSTEM_CONF.format(socket=socket_path, confdir=confdir))
    try:
        process, address = _spawn_daemon(config, socket_path, timeout, quiet)
    except RuntimeError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return TestBus(address=address, directory=directory, process=process, quiet=quiet)


def _spawn_daemon(
    config: str, socket_path: str, timeout: float, quiet: bool
) -> tuple[subprocess.Popen[bytes], str]:
    """``dbus-daemon`` on ``config``; the process and its address once it listens."""
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [
                "dbus-daemon",
                f"--config-file={config}",
                "--nofork",
                "--nopidfile",
                f"--print-address={write_fd}",
            ],
            pass_fds=(write_fd,),
            start_new_session=True,
            # Unprivileged, the daemon warns that it cannot raise its fd limit.
            stderr=subprocess.DEVNULL if quiet else None,
        )
    finally:
        os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        line = os.read(read_fd, READY_LINE_MAX).decode().strip() if ready else ""
    finally:
        os.close(read_fd)
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError(f"dbus-daemon did not print its address within {timeout} s")
    os.chmod(socket_path, 0o777)
    return process, line


def main() -> int:
    """``python -m ble_scanner.testing.testbus``: a private bus for trying things by hand."""
    bus = start_test_bus()
    print(f"export DBUS_SYSTEM_BUS_ADDRESS={bus.address}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        bus.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise SystemExit(main())
