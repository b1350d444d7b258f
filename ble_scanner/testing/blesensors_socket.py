"""A stand-in for dbus-ble-sensors' UDP input, for tests and the bench.

``parse`` is ``ble_socket_parse`` and ``ble_parse_adv`` of
victronenergy/dbus-ble-sensors (``src/ble-socket.c``, ``src/ble-handler.c``)
ported step by step, bounds checks included, so that a datagram it accepts
is one dbus-ble-sensors accepts: at most 128 bytes read; version 1 (flags,
bdaddr, one manufacturer entry, optional RSSI, repeater and name); version 2
(repeater and advertiser bdaddr, RSSI, raw AD structures of which 0x09 and
0xFF are used; a manufacturer entry needs at least one payload byte; a name
only names a device a manufacturer handler knows). ``BleSensorsReceiver``
listens on UDP and records sensors as dbus-ble-sensors would create them.

``python -m ble_scanner.testing.blesensors_socket --port N --count-file F``
counts datagrams in a process of its own (the bench): it prints
``{"ready": true, "port": P}`` once bound (``--port 0``: any free port) and
writes the count to F on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from dataclasses import dataclass, field
from typing import Final

# ble-socket.c
MAX_PACKET: Final = 128  # BLE_SOCKET_MAX_PACKET: recvfrom's buffer
MIN_SIZE_V1: Final = 11
MIN_SIZE_V2: Final = 14
FLAG_RSSI: Final = 0x01
FLAG_REPEATER: Final = 0x02
FLAG_NAME: Final = 0x04
# ble-handler.c's handler table (v0.31): the ids a sensor can be made from.
HANDLED_IDS: Final = frozenset({0x0F53, 0x0499, 0x0059, 0x0067, 0x02E1, 0x0CC0})


def address_of(bdaddr: bytes) -> str:
    """bdaddr_t (least significant byte first) -> ``AA:BB:CC:DD:EE:FF``."""
    return ":".join(f"{b:02X}" for b in reversed(bdaddr))


@dataclass
class Sensor:
    """What dbus-ble-sensors learned about one advertiser from the socket."""

    address: str
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    name: str | None = None
    reports: int = 0


@dataclass
class Receiver:
    """The sensors, as ``ble_handle_mfg`` and ``ble_handle_name`` see them."""

    sensors: dict[str, Sensor] = field(default_factory=dict)
    datagrams: list[bytes] = field(default_factory=list)

    def handle_mfg(self, bdaddr: bytes, mfg_id: int, payload: bytes) -> None:
        if mfg_id not in HANDLED_IDS:
            return
        address = address_of(bdaddr)
        sensor = self.sensors.setdefault(address, Sensor(address))
        sensor.manufacturer_data[mfg_id] = payload
        sensor.reports += 1

    def handle_name(self, bdaddr: bytes, name: bytes) -> None:
        sensor = self.sensors.get(address_of(bdaddr))  # ble_dbus_get_dev: known devices only
        if sensor is not None:
            sensor.name = name.decode("utf-8", "replace")

    def parse_adv(self, bdaddr: bytes, buf: bytes) -> None:
        """ble_parse_adv: AD structures ``[len][type][data]``; stops at a 0 or short length."""
        pos, left = 0, len(buf)
        while left >= 2:
            adlen = buf[pos]
            pos += 1
            left -= 1
            if not adlen or left < adlen:
                break
            adtype = buf[pos]
            pos += 1
            adlen -= 1
            left -= 1
            data = buf[pos : pos + adlen]
            if adtype == 0x09:
                self.handle_name(bdaddr, data)
            elif adtype == 0xFF and adlen > 2:
                self.handle_mfg(bdaddr, int.from_bytes(data[:2], "little"), data[2:])
            pos += adlen
            left -= adlen

    def parse(self, datagram: bytes) -> None:
        """ble_socket_parse on what recvfrom put in its 128-byte buffer."""
        buf = datagram[:MAX_PACKET]
        self.datagrams.append(buf)
        size = len(buf)
        if size < 1:
            return
        if buf[0] == 1:
            if size < MIN_SIZE_V1:
                return
            flags = buf[1]
            bdaddr = buf[2:8]
            mfg_id = buf[8] | (buf[9] << 8)
            payload_len = buf[10]
            offset = 11 + payload_len
            if size < offset:
                return
            self.handle_mfg(bdaddr, mfg_id, buf[11:offset])
            if flags & FLAG_RSSI:
                offset += 1
                if size < offset:
                    return
            if flags & FLAG_REPEATER:
                offset += 6
                if size < offset:
                    return
            if flags & FLAG_NAME:
                offset += 1
                if size < offset:
                    return
                name_len = buf[offset - 1]
                offset += name_len
                if size < offset:
                    return
                self.handle_name(bdaddr, buf[offset - name_len : offset])
        elif buf[0] == 2:
            if size < MIN_SIZE_V2:
                return
            self.parse_adv(buf[7:13], buf[14:])


class BleSensorsReceiver(asyncio.DatagramProtocol):
    """A UDP socket bound like dbus-ble-sensors' (``127.0.0.1``), parsing what arrives."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.arrived = asyncio.Event()

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0) -> BleSensorsReceiver:
        """Listen on ``host:port`` (0: any free port, then ``port`` says which)."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(cls, local_addr=(host, port))
        protocol.port = transport.get_extra_info("sockname")[1]
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.receiver.parse(data)
        self.arrived.set()

    @property
    def datagrams(self) -> list[bytes]:
        return self.receiver.datagrams

    @property
    def sensors(self) -> dict[str, Sensor]:
        return self.receiver.sensors

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# Asked of the kernel for the counting receiver (it grants up to net.core.rmem_max).
_RCVBUF: Final = 4 * 1024 * 1024


class _Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.count += 1


async def _count(port: int) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # A burst must not overflow the receive buffer: the count is the loss measurement.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.bind(("127.0.0.1", port))
    transport, counter = await loop.create_datagram_endpoint(_Counter, sock=sock)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # A JSON line, as the bench's processes announce themselves (tests/bench/runner.py).
    port = transport.get_extra_info("sockname")[1]
    print(json.dumps({"ready": True, "port": port}), flush=True)
    await stop.wait()
    transport.close()
    return counter.count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="count datagrams as dbus-ble-sensors' socket")
    parser.add_argument("--port", type=int, default=18542)
    parser.add_argument("--count-file", required=True, help="where the count goes on SIGTERM")
    args = parser.parse_args(argv)
    count = asyncio.run(_count(args.port))
    with open(args.count_file, "w") as f:
        f.write(f"{count}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
