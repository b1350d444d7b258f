"""bluez/mgmtchannel.py: the kernel socket's clean refusal, and reading a seam."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from pathlib import Path

import pytest

from ble_scanner.bluez import mgmt
from ble_scanner.bluez.mgmtchannel import MgmtChannel, describe, open_control_socket
from tests.helpers import wait_until


def _kernel_has_bluetooth() -> bool:
    try:
        socket.socket(31, socket.SOCK_RAW, 1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(_kernel_has_bluetooth(), reason="this kernel has Bluetooth")
@pytest.mark.parametrize("use_libc", [True, False])
def test_no_bluetooth_in_the_kernel_is_a_clean_error(use_libc: bool) -> None:
    """The ctypes path (Venus's Python has no AF_BLUETOOTH) fails as plainly as Python's."""
    with pytest.raises(OSError) as raised:
        open_control_socket(use_libc=use_libc)
    assert raised.value.errno == errno.EAFNOSUPPORT
    assert "no Bluetooth" in describe(raised.value)


def test_permission_is_explained() -> None:
    assert "CAP_NET_ADMIN" in describe(OSError(errno.EPERM, "Operation not permitted"))


def frame(code: int, params: bytes) -> bytes:
    return struct.pack("<HHH", code, 0, len(params)) + params


async def test_a_seam_is_read_in_bursts_and_its_end_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "mgmt")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)
    events: list[mgmt.Event] = []
    lost: list[str] = []
    channel = MgmtChannel(events.append, lost.append, seam=path)
    channel.open()
    peer, _ = server.accept()
    found = b"\x01\x02\x03\x04\x05\x06" + struct.pack("<BbIH", 1, -50, 0, 0)
    count = 600  # more than one wake-up's worth, and more than the socket buffers

    def send() -> None:
        for _ in range(count):
            peer.send(frame(0x0012, found))
        peer.send(b"\x12")  # short: malformed, and the channel goes on
        peer.send(frame(0x0012, found))

    await asyncio.to_thread(send)
    await wait_until(lambda: len(events) == count + 2)
    assert isinstance(events[count], mgmt.Malformed)
    assert isinstance(events[-1], mgmt.Found)
    assert not lost
    peer.close()
    await wait_until(lambda: lost == ["end of file"])
    assert channel.sock is None
    server.close()


def test_a_missing_seam_is_an_error(tmp_path: Path) -> None:
    channel = MgmtChannel(lambda e: None, lambda r: None, seam=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError):
        asyncio.run(_open(channel))


async def _open(channel: MgmtChannel) -> None:
    channel.open()


async def test_each_wake_up_s_frames_are_handed_on_between_hold_and_release(
    tmp_path: Path,
) -> None:
    """The outbox is told around each wake-up, so that the signals its frames make go
    out in one write at its end; a failing handler does not leave it held."""
    path = str(tmp_path / "mgmt")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)
    told: list[str] = []

    class WakeUp:
        def hold(self) -> None:
            told.append("hold")

        def release(self) -> None:
            told.append("release")

    def on_event(event: mgmt.Event) -> None:
        told.append("frame")
        if isinstance(event, mgmt.Malformed):
            raise RuntimeError("a handler that fails")

    channel = MgmtChannel(on_event, lambda reason: None, seam=path, wake_up=WakeUp())
    channel.open()
    peer, _ = server.accept()
    found = b"\x01\x02\x03\x04\x05\x06" + struct.pack("<BbIH", 1, -50, 0, 0)
    for data in (frame(0x0012, found), b"\x12", frame(0x0012, found)):
        peer.send(data)
    await wait_until(lambda: told.count("frame") == 3 and told[-1] == "release")
    channel.close()
    peer.close()
    server.close()
    # However the frames fell into wake-ups: each wake-up's frames sit between one
    # hold and its release, and every hold was released.
    assert told[0] == "hold"
    depth = 0
    for word in told:
        depth += {"hold": 1, "release": -1, "frame": 0}[word]
        assert depth in (0, 1) and (word != "frame" or depth == 1)
    assert depth == 0
