"""Guest agent of the real-BlueZ tier: runs as PID 1's successor inside the QEMU guest.

Python standard library only (it runs on the guest's Debian python3). It:

- starts ``btvirt -L -l2`` (hci0 scans, hci1 advertises, one virtual radio);
- relays the guest's "system bus" to the host: a unix socket here
  (``/run/realbluez/bus``, bluetoothd's DBUS_SYSTEM_BUS_ADDRESS) is multiplexed
  over the virtio-serial port ``realbluez.bus``, framed as
  ``type (1 byte) | connection id (4) | length (4) | payload``; the host opens
  one connection to its test bus per guest connection, so bluetoothd dying
  closes its bus connection on the host and a restart makes a fresh one.
  The port itself stays open for the whole boot: a reopened port hung in the
  measurements (tests/README.md "The real-BlueZ tier");
- serves a control channel on the port ``realbluez.control``: one JSON object
  per line each way, ``{"id": n, "op": ...}`` → ``{"id": n, ...}``.
"""

import glob
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

BUS_PORT = "realbluez.bus"
CONTROL_PORT = "realbluez.control"
RUN_DIR = "/run/realbluez"
BUS_SOCKET = RUN_DIR + "/bus"
BLUETOOTHD = "/usr/libexec/bluetooth/bluetoothd"
BLUETOOTHD_LOG = RUN_DIR + "/bluetoothd.log"

OPEN, DATA, CLOSE = 1, 2, 3
HEADER = struct.Struct(">BII")


def log(*args):
    print("agent:", *args, file=sys.stderr, flush=True)


def find_port(name, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        for path in glob.glob("/sys/class/virtio-ports/*/name"):
            with open(path) as f:
                if f.read().strip() == name:
                    return "/dev/" + path.split("/")[-2]
        if time.monotonic() > deadline:
            raise RuntimeError(f"virtio-serial port {name} not found")
        time.sleep(0.05)


class Port:
    """A virtio-serial port opened once; writes are serialised."""

    def __init__(self, name):
        path = find_port(name)
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(path + " did not appear")
            time.sleep(0.05)
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()

    def write(self, data):
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def read(self, n=65536):
        return os.read(self.fd, n)


class BusRelay:
    """Multiplexes guest connections to the bus socket over one port."""

    def __init__(self):
        self.port = Port(BUS_PORT)
        self.conns = {}
        self.lock = threading.Lock()
        self.next_id = 1

    def start(self):
        os.makedirs(RUN_DIR, exist_ok=True)
        if os.path.exists(BUS_SOCKET):
            os.unlink(BUS_SOCKET)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(BUS_SOCKET)
        os.chmod(BUS_SOCKET, 0o666)
        self.listener.listen(16)
        threading.Thread(target=self.accept_loop, daemon=True).start()
        threading.Thread(target=self.port_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            conn, _ = self.listener.accept()
            with self.lock:
                cid = self.next_id
                self.next_id += 1
                self.conns[cid] = conn
            self.port.write(HEADER.pack(OPEN, cid, 0))
            threading.Thread(target=self.conn_loop, args=(cid, conn), daemon=True).start()

    def conn_loop(self, cid, conn):
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.port.write(HEADER.pack(DATA, cid, len(data)) + data)
        except OSError:
            pass
        self.drop(cid, tell_host=True)

    def drop(self, cid, tell_host):
        with self.lock:
            conn = self.conns.pop(cid, None)
        if conn is None:
            return
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()
        if tell_host:
            self.port.write(HEADER.pack(CLOSE, cid, 0))

    def port_loop(self):
        buf = b""
        while True:
            chunk = self.port.read()
            if not chunk:
                # No host connected to the chardev yet: the port reads EOF.
                time.sleep(0.05)
                continue
            buf += chunk
            while len(buf) >= HEADER.size:
                kind, cid, length = HEADER.unpack_from(buf)
                if len(buf) < HEADER.size + length:
                    break
                payload = buf[HEADER.size : HEADER.size + length]
                buf = buf[HEADER.size + length :]
                if kind == DATA:
                    with self.lock:
                        conn = self.conns.get(cid)
                    if conn is not None:
                        try:
                            conn.sendall(payload)
                        except OSError:
                            self.drop(cid, tell_host=True)
                elif kind == CLOSE:
                    self.drop(cid, tell_host=False)


def mgmt_knows(index):
    """The management interface lists ``hci<index>`` (its setup is over)."""
    out = subprocess.run(["btmgmt", "info"], capture_output=True, text=True, timeout=30).stdout
    return f"hci{index}:" in out


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def controllers_set_up(timeout=30.0):
    """Wait for hci0 and hci1 to be known to mgmt; returns those that are not.

    The kernel runs a new controller's init sequence, each command bounded by
    HCI_INIT_TIMEOUT (10 s, net/bluetooth/hci_core.c); under TCG on a loaded
    host btvirt can answer later than that ("hci0: Opcode 0x0c03 failed:
    -110" in dmesg), and the controller then stays in setup, never known to
    mgmt (Invalid Index) nor to bluetoothd. Opening it again did not help
    (measured): the caller starts btvirt again.
    """
    wait_for(lambda: all(os.path.exists(f"/sys/class/bluetooth/hci{i}") for i in (0, 1)), 10)
    wait_for(lambda: all(mgmt_knows(i) for i in (0, 1)), timeout)
    return [i for i in (0, 1) if not mgmt_knows(i)]


class Agent:
    def __init__(self):
        self.bluetoothd = None
        self.bluetoothd_args = []
        self.btvirt = None

    def start_btvirt(self, attempts=5):
        """btvirt's hci0 and hci1, both through their setup (see :func:`controllers_set_up`)."""
        for attempt in range(attempts):
            self.btvirt = subprocess.Popen(
                ["btvirt", "-L", "-l2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            missing = controllers_set_up()
            if not missing:
                return
            log(f"controllers {missing} failed their setup (attempt {attempt + 1}); btvirt again")
            self.btvirt.kill()
            self.btvirt.wait()
            wait_for(lambda: not glob.glob("/sys/class/bluetooth/hci*"), 30)
        raise RuntimeError(f"btvirt's controllers failed their setup {attempts} times")

    def start_bluetoothd(self, experimental=True, extra_args=()):
        if self.bluetoothd is not None and self.bluetoothd.poll() is None:
            return {"rc": 1, "error": "bluetoothd already running", "pid": self.bluetoothd.pid}
        args = [BLUETOOTHD, "-n"] + (["-E"] if experimental else []) + list(extra_args)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS="unix:path=" + BUS_SOCKET)
        with open(BLUETOOTHD_LOG, "ab") as logf:
            logf.write(f"=== {' '.join(args)}\n".encode())
            logf.flush()
            self.bluetoothd = subprocess.Popen(args, env=env, stdout=logf, stderr=subprocess.STDOUT)
        self.bluetoothd_args = args
        return {"rc": 0, "pid": self.bluetoothd.pid, "argv": args}

    def stop_bluetoothd(self, sig=signal.SIGTERM, timeout=10.0):
        proc = self.bluetoothd
        if proc is None or proc.poll() is not None:
            return {"rc": 0, "was_running": False}
        proc.send_signal(sig)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        return {"rc": 0, "was_running": True, "status": status}

    def handle(self, req):
        op = req.get("op")
        if op == "run":
            try:
                proc = subprocess.run(
                    req["argv"],
                    capture_output=True,
                    timeout=req.get("limit", 30),
                    input=req.get("input", "").encode(),
                )
            except subprocess.TimeoutExpired as exc:
                return {"rc": -1, "out": "", "err": f"timeout: {exc}"}
            except OSError as exc:
                return {"rc": -1, "out": "", "err": str(exc)}
            return {
                "rc": proc.returncode,
                "out": proc.stdout.decode(errors="replace"),
                "err": proc.stderr.decode(errors="replace"),
            }
        if op == "start_bluetoothd":
            return self.start_bluetoothd(req.get("experimental", True), req.get("args", []))
        if op == "stop_bluetoothd":
            return self.stop_bluetoothd(getattr(signal, req.get("signal", "SIGTERM")))
        if op == "bluetoothd_status":
            proc = self.bluetoothd
            running = proc is not None and proc.poll() is None
            return {
                "rc": 0,
                "running": running,
                "pid": proc.pid if running else None,
                "returncode": None if proc is None else proc.poll(),
                "argv": self.bluetoothd_args,
            }
        if op == "info":
            return {"rc": 0, **self.info()}
        if op == "poweroff":
            os.sync()
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("o")
            return {"rc": 0}
        return {"rc": -1, "err": f"unknown op {op!r}"}

    def info(self):
        version = subprocess.run([BLUETOOTHD, "--version"], capture_output=True, text=True)
        return {
            "bluez_version": version.stdout.strip(),
            "kernel": os.uname().release,
            "uptime": float(open("/proc/uptime").read().split()[0]),
        }

    def serve(self, port):
        def answer(req):
            try:
                reply = self.handle(req)
            except Exception as exc:  # report, never die: PID 1 must not exit
                reply = {"rc": -1, "err": f"{type(exc).__name__}: {exc}"}
            reply["id"] = req.get("id")
            port.write((json.dumps(reply) + "\n").encode())

        port.write((json.dumps({"id": None, "event": "ready", **self.info()}) + "\n").encode())
        buf = b""
        while True:
            chunk = port.read()
            if not chunk:
                time.sleep(0.05)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                except ValueError:
                    log("bad control line", line[:200])
                    continue
                threading.Thread(target=answer, args=(req,), daemon=True).start()


AGENT = Agent()


def main():
    try:
        relay = BusRelay()
        relay.start()
        control = Port(CONTROL_PORT)
        AGENT.start_btvirt()
        AGENT.start_bluetoothd(experimental=True)
        AGENT.serve(control)
    except BaseException as exc:
        log("fatal:", type(exc).__name__, exc)
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("o")
        time.sleep(60)


if __name__ == "__main__":
    main()
