"""Another Bluetooth service holding one bt-claims file: a real process for the claims tests.

``python claim_holder.py DIR NAME SERVICE`` creates ``DIR/NAME`` exclusively
with the convention's line (``<pid> <service> <since>``), prints ``ready``,
touches it every 10 s as convention 0.4 asks, and unlinks it on SIGTERM.
Written from the convention, not from ble_scanner, so that it checks our
reading of the files rather than agreeing with it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

HEARTBEAT = 10.0  # convention 0.4


def main() -> int:
    directory, name, service = sys.argv[1:4]
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, f"{os.getpid()} {service} {int(time.time())}\n".encode())
    os.close(fd)

    def release(signum: int, frame: object) -> None:
        os.unlink(path)
        sys.exit(0)

    signal.signal(signal.SIGTERM, release)
    print("ready", flush=True)
    while True:
        time.sleep(HEARTBEAT)
        os.utime(path)


if __name__ == "__main__":
    sys.exit(main())
