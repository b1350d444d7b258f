"""Small test helpers: waiting on conditions with a deadline, never sleeping blind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ble_scanner.bus import calls
from ble_scanner.const import (
    SCANNER_INTERFACE,
    SCANNER_SERVICE,
)

if TYPE_CHECKING:
    from ble_scanner.main import ScannerApp
    from ble_scanner.testing.simulator import BluezSimulator

T = TypeVar("T")

# Everything a test calls answers from memory; 5 s is a hang, on a busy machine too.
CALL_TIMEOUT: Final = 5.0
# How long a child running as another user may take to report (it runs a few calls,
# or a few hundred subscriptions, on a loaded 2-core machine).
CHILD_TIMEOUT: Final = 30.0
# The service's options that turn its load budget off, for a service process
# whose emissions a test or benchmark counts: the machine's load must not decide them.
NO_LOAD_BUDGET: Final = ("--shed-load-average", "0", "--shed-cpu-percent", "0")


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> float:
    """Poll ``predicate`` until true; return the seconds it took or fail with ``what``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    timeout: float = CALL_TIMEOUT,
) -> Message:
    """One method call with a deadline; returns the reply, which may be an error.

    Tests look at error replies themselves (``assert_error``), hence
    ``call_reply`` rather than ``call``.
    """
    message = calls.method_call(destination, path, interface, member, signature, body)
    return await calls.call_reply(bus, message, timeout=timeout)


async def scanner_call(
    bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None
) -> Message:
    """A Scanner1 call on ``/``, as any client makes it; the reply, which may be an error."""
    return await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, member, signature, body)


async def name_owner(bus: MessageBus, name: str = SCANNER_SERVICE) -> str | None:
    """The unique name owning ``name`` now, or None."""
    return await calls.name_owner(bus, name, timeout=CALL_TIMEOUT)


async def has_owner(bus: MessageBus, name: str = SCANNER_SERVICE) -> bool:
    return await name_owner(bus, name) is not None


def scanning(sim: BluezSimulator, adapter: str = "hci0") -> bool:
    """A session on ``adapter`` and its radio reporting: only then is an advertisement
    heard. A session is there from StartDiscovery's call; ``Discovering`` (and the
    kernel's reports) follow once the kernel has started, as in BlueZ, and a report
    in between is heard by nobody (a test that advertised then waited in vain)."""
    return bool(sim.sessions(adapter)) and sim.is_discovering(adapter)


def assert_error(reply: Message, name: str) -> None:
    assert reply.message_type == MessageType.ERROR, f"expected {name}, got {reply.body}"
    assert reply.error_name == name, (reply.error_name, reply.body)


def assert_ok(reply: Message) -> list[Any]:
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


class SignalRecorder:
    """Collects signals matching a filter on one connection, with waits on them."""

    def __init__(self, bus: MessageBus, **match: str) -> None:
        self.bus = bus
        self.match = match
        self.messages: list[Message] = []
        self._changed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        for key, value in self.match.items():
            if getattr(msg, key) != value:
                return False
        self.messages.append(msg)
        self._changed.set()
        return False

    def close(self) -> None:
        self.bus.remove_message_handler(self._on_message)

    def of(self, member: str) -> list[Message]:
        return [m for m in self.messages if m.member == member]

    async def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float = 5.0, what: str = ""
    ) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.messages):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what or 'signals'}; "
                    f"got {[(m.member, m.body) for m in self.messages][-10:]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.messages


async def add_match(bus: MessageBus, rule: str) -> None:
    await calls.add_match(bus, rule, timeout=CALL_TIMEOUT)


def adapter_state(app: ScannerApp, adapter: str = "hci0") -> str:
    """The service's state of one adapter in words; "absent" if it has none."""
    for status in app.status().adapters:
        if status.name == adapter:
            return status.state
    return "absent"


async def state_becomes(app: ScannerApp, state: str, adapter: str = "hci0") -> float:
    """Wait for the service's own state: it changes when BlueZ's reply reaches the
    service, which can be after the simulator already shows the session."""
    return await wait_until(
        lambda: adapter_state(app, adapter) == state, what=f"{adapter} state {state!r}"
    )


@contextlib.asynccontextmanager
async def as_user(
    uid: int,
    gids: list[int],
    work: Callable[..., Coroutine[Any, Any, dict[str, Any]]],
    *args: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Fork a child that drops to ``uid`` with supplementary groups ``gids``, runs
    ``work(*args)`` and reports its JSON-ready result; yields that result while the
    child still runs (its bus connections still open), and reaps it on exit.

    The tests run as root; this is how they act as another user. The fork happens
    in this thread (no executor thread may exist at a fork) after every import: the
    interpreter's files may be unreadable to that user (pyenv's, under /root 0700).
    """
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(report_r)
            os.close(hold_w)
            os.setgroups(gids)
            os.setgid(uid)
            os.setuid(uid)
            asyncio.set_event_loop(None)
            loop = asyncio.new_event_loop()
            result = loop.run_until_complete(work(*args))
            result["uid"] = os.getuid()
            os.write(report_w, json.dumps(result).encode() + b"\n")
            os.read(hold_r, 1)  # until the parent closes it: the connections stay open
            code = 0
        except BaseException:
            traceback.print_exc()  # the parent's assertion says only that the child failed
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(hold_r)
    loop = asyncio.get_running_loop()
    data = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        chunk = os.read(report_r, 65536)
        data.extend(chunk)
        if (not chunk or data.endswith(b"\n")) and not done.done():
            done.set_result(None)

    loop.add_reader(report_r, readable)
    try:
        await asyncio.wait_for(done, CHILD_TIMEOUT)
        assert data, f"the uid {uid} child failed"
        yield json.loads(bytes(data))
    finally:
        loop.remove_reader(report_r)
        os.close(report_r)
        os.close(hold_w)
        await wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, what="the child reaped")
