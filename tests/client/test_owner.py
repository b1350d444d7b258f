"""The owner check: a process that grabbed the scanner's name cannot feed clients."""

from __future__ import annotations

import asyncio
import os
import select
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dbus_fast import BusType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from ble_scanner.client import ScannerClient, UntrustedServiceError
from ble_scanner.config import ScannerConfig
from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests.client.conftest import start_service
from tests.helpers import wait_until

NOBODY = 65534
# The shipped policy lets only root own the name; this bus also lets nobody
# connect (testbus's config has no <allow user="*"/>) and own it.
NOBODY_MAY_OWN = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow user="nobody"/>
  </policy>
  <policy user="nobody">
    <allow own="com.victronenergy.ble.scanner"/>
  </policy>
</busconfig>
"""


@dataclass
class Impostor:
    """A forked child running as uid 65534 that takes the name when told."""

    pid: int
    go: int  # write a byte: request the name
    done: int  # reads a line once the name is owned

    def take_name(self, timeout: float = 10.0) -> None:
        os.write(self.go, b"x")
        ready, _, _ = select.select([self.done], [], [], timeout)
        assert ready, "the impostor did not report"
        assert os.read(self.done, 64) == b"owned\n"


async def _read(fd: int) -> bytes:
    # add_reader, not a thread: nobody cannot import modules it has not got yet.
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(os.read(fd, 1)))
    try:
        return await done
    finally:
        loop.remove_reader(fd)


async def _own_name(address: str, go: int, done: int) -> None:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    await _read(go)
    reply = await bus.request_name(SCANNER_SERVICE, NameFlag.DO_NOT_QUEUE)
    os.write(done, b"owned\n" if reply == RequestNameReply.PRIMARY_OWNER else b"refused\n")
    await _read(go)  # returns when the parent closes the pipe


@pytest.fixture
def nobody_bus() -> Iterator[TestBus]:
    bus = start_test_bus(extra_policies={"nobody-owns-scanner.conf": NOBODY_MAY_OWN})
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
def impostor(nobody_bus: TestBus) -> Iterator[Impostor]:
    # Fork after every import: the interpreter's files may not be readable by
    # nobody (pyenv's under /root, mode 0700), so the child must load nothing.
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(go_w)
            os.close(done_r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            asyncio.run(_own_name(nobody_bus.address, go_r, done_w))
            code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(done_w)
    try:
        yield Impostor(pid, go_w, done_r)
    finally:
        os.close(go_w)
        os.close(done_r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


async def test_a_service_name_owned_by_another_user_is_refused(
    nobody_bus: TestBus, impostor: Impostor
) -> None:
    impostor.take_name()
    client = ScannerClient(bus_address=nobody_bus.address, service_timeout=0)
    with pytest.raises(UntrustedServiceError, match="uid 65534") as info:
        await client.connect()
    assert info.value.uid == NOBODY


async def test_trusting_that_user_explicitly_is_possible(
    nobody_bus: TestBus, impostor: Impostor
) -> None:
    impostor.take_name()
    client = ScannerClient(bus_address=nobody_bus.address, trusted_uids={NOBODY})
    await client.connect()
    try:
        assert client.mode == "service"
    finally:
        await client.close()


async def test_a_takeover_by_another_user_ends_the_stream_with_an_error(
    nobody_bus: TestBus, impostor: Impostor
) -> None:
    # No BlueZ on this bus, so no management seam either: D-Bus ingest.
    app = await start_service(nobody_bus, ScannerConfig(ingest="dbus"))
    client = ScannerClient(bus_address=nobody_bus.address)
    await client.connect()
    try:
        stream = await client.subscribe().start()
        await app.stop()
        await wait_until(lambda: client.mode == "waiting", what="the service gone")
        await asyncio.get_running_loop().run_in_executor(None, impostor.take_name)
        with pytest.raises(UntrustedServiceError):
            await asyncio.wait_for(anext(stream), 5)
        assert client.mode == "waiting"
    finally:
        await client.close()
        await app.stop()
