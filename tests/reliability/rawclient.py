"""A D-Bus client on a bare socket: it says what it must and then reads nothing, or dies.

dbus-fast cannot be made to stop reading or to vanish mid-conversation, which
is what the crash and stuck-client faults need. Blocking calls: each takes
microseconds against the local daemon, which answers the handshake itself.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from dbus_fast import Message, Variant

from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE

HANDSHAKE_TIMEOUT = 5.0


def socket_path(address: str) -> str:
    for part in address.split(","):
        if part.startswith("unix:path="):
            return part[len("unix:path=") :]
    raise ValueError(f"not a unix:path address: {address}")


class RawClient:
    """Authenticated (EXTERNAL), Hello sent; every further message is fire-and-forget."""

    def __init__(self, address: str, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        self.sock.connect(socket_path(address))
        uid = str(os.getuid()).encode().hex().encode()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = self.sock.recv(4096)
        if not line.startswith(b"OK "):
            raise ConnectionError(f"authentication refused: {line!r}")
        self.sock.sendall(b"BEGIN\r\n")
        self.serial = 0
        self.send(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="Hello",
            )
        )

    def send(self, msg: Message) -> None:
        self.serial += 1
        msg.serial = self.serial
        self.sock.sendall(bytes(msg._marshall(False)))

    def call_scanner(self, member: str, signature: str = "", body: list[Any] | None = None) -> None:
        self.send(
            Message(
                destination=SCANNER_SERVICE,
                path="/",
                interface=SCANNER_INTERFACE,
                member=member,
                signature=signature,
                body=body or [],
            )
        )

    def subscribe(self, **flt: Variant) -> None:
        self.call_scanner("Subscribe", "a{sv}", [flt])

    def close(self) -> None:
        """Abruptly: no Unsubscribe, no goodbye; the daemon sees the socket close."""
        self.sock.close()
