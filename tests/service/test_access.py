"""Who may do what (docs/dbus-api.md): everyone reads and subscribes; root and the steer
group steer the radio; root alone sets the tree; subscriptions are counted per user.

Each test runs on a bus that enforces the shipped policy (deny by default, as
Debian's system.conf) and on an open one (Venus OS's, where only the service
checks), with clients forked and dropped to another uid (tests/helpers.py ``as_user``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import io
import logging
import pwd
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast import BusType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.credentials import CredentialCache
from ble_scanner.client import AccessDeniedError, ScannerClient, cli
from ble_scanner.config import ScannerConfig
from ble_scanner.const import (
    ERROR_ACCESS_DENIED,
    ERROR_LIMITS_EXCEEDED,
    SCANNER_INTERFACE,
    SCANNER_SERVICE,
)
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus, scanner_policy, start_test_bus
from ble_scanner.venus.const import BUSITEM_INTERFACE
from tests.conftest import connect, disconnect, simulator_on, start_scanner, wait_scanning
from tests.helpers import as_user, call, has_owner, wait_until

ADAPTER = "hci0"
NOBODY = 65534
# A second unprivileged user: one the user database knows, as dbus-daemon refuses
# a connection from a uid it cannot look up.
OTHER = next(u.pw_uid for u in pwd.getpwall() if u.pw_uid not in (0, NOBODY))
# A group that exists here (a bus policy names groups the daemon can resolve) and
# that neither test user is in by its primary gid (the children's gid is their uid).
STEER = next(g for g in grp.getgrall() if g.gr_gid not in (0, NOBODY, OTHER))
# Everyone may call the scanner, as on Venus OS: the daemon checks nothing.
OPEN_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="mandatory">
    <allow send_destination="com.victronenergy.ble.scanner"/>
  </policy>
</busconfig>
"""


def steer_group_policy(name: str) -> str:
    """The shipped file's block for group bluetooth, for group ``name`` instead."""
    block = re.search(r'<policy group="bluetooth">.*?</policy>', scanner_policy(), re.S)
    assert block is not None, "the shipped policy has no block for group bluetooth"
    return (
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n<busconfig>\n'
        + block.group(0).replace('group="bluetooth"', f'group="{name}"')
        + "\n</busconfig>\n"
    )


@pytest.fixture(params=["policy", "open"])
def any_bus(request: pytest.FixtureRequest) -> Iterator[TestBus]:
    if request.param == "policy":
        extra = {"steer-group.conf": steer_group_policy(STEER.gr_name)}
    else:
        extra = {"open.conf": OPEN_POLICY}
    bus = start_test_bus(extra_policies=extra)
    bus.extra_policies = extra
    try:
        yield bus
    finally:
        bus.stop()


def is_open(test_bus: TestBus) -> bool:
    return "open.conf" in test_bus.extra_policies


@pytest_asyncio.fixture
async def sim(any_bus: TestBus) -> AsyncIterator[BluezSimulator]:
    async with simulator_on(any_bus) as simulator:
        yield simulator


async def scanning(test_bus: TestBus, bluez: BluezSimulator, config: ScannerConfig) -> ScannerApp:
    app = await start_scanner(test_bus, config)
    await wait_scanning(app, bluez)
    return app


@pytest_asyncio.fixture
async def app(any_bus: TestBus, sim: BluezSimulator) -> AsyncIterator[ScannerApp]:
    # The group by name on the bus that has it in its policy, by number on the other.
    group = STEER.gr_name if not is_open(any_bus) else str(STEER.gr_gid)
    service = await scanning(any_bus, sim, ScannerConfig(steer_group=group))
    try:
        yield service
    finally:
        await service.stop()


# --- what the forked clients do ----------------------------------------------------


async def _ask(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    path: str = "/",
    interface: str = SCANNER_INTERFACE,
) -> list[str]:
    """[error name or "ok", the error's text]."""
    reply = await call(bus, SCANNER_SERVICE, path, interface, member, signature, body)
    text = reply.body[0] if reply.error_name and reply.body else ""
    return [reply.error_name or "ok", str(text)]


async def _session(bus: MessageBus) -> bool:
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetStatus")
    return bool(reply.body[0]["Adapters"].value[ADAPTER]["Session"].value)


async def _client(address: str, steer: bool) -> dict[str, Any]:
    """Reads, subscribes, then tries to steer (and, if ``steer``, sees the pause work)."""
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    out: dict[str, Any] = {"name": bus.unique_name}
    out["GetStatus"] = await _ask(bus, "GetStatus")
    out["GetDiscoveredDevices"] = await _ask(bus, "GetDiscoveredDevices", "a{sv}", [{}])
    out["Subscribe"] = await _ask(bus, "Subscribe", "a{sv}", [{}])
    out["GetValue"] = await _ask(bus, "GetValue", path="/Scanning", interface=BUSITEM_INTERFACE)
    out["PauseScan"] = await _ask(bus, "PauseScan", "sd", [ADAPTER, 30.0])
    if steer:

        async def paused() -> bool:
            return not await _session(bus)

        await wait_until(paused, timeout=10, what="the pause to stop our discovery")
    out["RequestActiveScan"] = await _ask(bus, "RequestActiveScan", "sd", ["", 30.0])
    out["SetValue"] = await _ask(
        bus, "SetValue", "v", [Variant("s", "x")], path="/CustomName", interface=BUSITEM_INTERFACE
    )
    out["again"] = await _ask(bus, "PauseScan", "sd", [ADAPTER, 30.0])
    return out


async def _subscriber(address: str, connections: int) -> dict[str, Any]:
    """Subscribes on ``connections`` connections until refused; keeps them open."""
    buses = [
        await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        for _ in range(connections)
    ]
    granted = 0
    refusals: list[list[str]] = []
    for bus in buses:
        while True:
            answer = await _ask(bus, "Subscribe", "a{sv}", [{"Replay": Variant("b", False)}])
            if answer[0] != "ok":
                refusals.append(answer)
                break
            granted += 1
    return {"granted": granted, "refusals": refusals}


# --- steering ------------------------------------------------------------------------


async def test_another_user_reads_and_subscribes_and_may_not_steer(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ble_scanner.service")
    stops = sim.call_count("StopDiscovery")
    async with as_user(NOBODY, [], _client, any_bus.address, False) as nobody:
        assert nobody["uid"] == NOBODY
        for member in ("GetStatus", "GetDiscoveredDevices", "Subscribe", "GetValue"):
            assert nobody[member][0] == "ok", (member, nobody[member])
        for member in ("PauseScan", "RequestActiveScan", "SetValue", "again"):
            assert nobody[member][0] == ERROR_ACCESS_DENIED, (member, nobody[member])
        # Nothing changed: no lease, our discovery never stopped, the adapter on.
        assert len(app.leases) == 0
        assert app.status().subscriptions == 1
        assert app.bus is not None and app.bus.unique_name in sim.sessions(ADAPTER)
        assert sim.is_powered(ADAPTER) and sim.is_discovering(ADAPTER)
        assert sim.call_count("StopDiscovery") == stops
    if is_open(any_bus):
        # Only the service could say no, and it says what is needed, logged once.
        assert nobody["PauseScan"][1] == (
            f"PauseScan needs root or membership of group '{STEER.gr_gid}'"
        )
        assert nobody["RequestActiveScan"][1].startswith("RequestActiveScan needs root or")
        assert nobody["SetValue"][1] == "SetValue needs root"
        refusals = [r for r in caplog.records if nobody["name"] in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]
        assert f"(uid {NOBODY}) refused" in refusals[0].getMessage()
    await wait_until(lambda: app.status().subscriptions == 0, what="its subscription ended")


async def test_a_member_of_the_steer_group_may_steer(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    async with as_user(NOBODY, [STEER.gr_gid], _client, any_bus.address, True) as member:
        assert member["PauseScan"][0] == "ok", member["PauseScan"]
        assert member["RequestActiveScan"][0] == "ok", member["RequestActiveScan"]
        assert member["again"][0] == "ok"
        # The tree's settings stay root's.
        assert member["SetValue"][0] == ERROR_ACCESS_DENIED
        assert len(app.leases) == 3
        assert app.bus is not None and app.bus.unique_name not in sim.sessions(ADAPTER)
    # Its leases ended with its connection; discovery is back.
    await wait_scanning(app, sim)
    assert len(app.leases) == 0


async def test_the_steer_group_applies_live(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    app.configure(ScannerConfig(**{**vars_of(app.config), "steer_group": ""}))
    async with as_user(NOBODY, [STEER.gr_gid], _client, any_bus.address, False) as member:
        if is_open(any_bus):
            assert member["PauseScan"] == [ERROR_ACCESS_DENIED, "PauseScan needs root"]
        assert len(app.leases) == 0


def vars_of(config: ScannerConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


# --- quotas ------------------------------------------------------------------------------


async def test_a_user_with_many_connections_cannot_take_the_others_subscriptions(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    per_user = app.config.max_subscriptions_per_user
    async with as_user(NOBODY, [], _subscriber, any_bus.address, 8) as first:
        assert first["granted"] == per_user  # 4 connections' worth, not 8
        name, text = first["refusals"][-1]
        assert name == ERROR_LIMITS_EXCEEDED
        assert f"uid {NOBODY} may hold at most {per_user}" in text
        assert "MaxSubscriptionsPerUser" in text
        async with as_user(OTHER, [], _subscriber, any_bus.address, 1) as other:
            assert other["granted"] == 16  # a whole connection's worth is still there
            status = app.status()
            assert status.subscriptions == per_user + 16
            assert status.users == 2


async def test_root_keeps_its_reserve(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    app.configure(ScannerConfig(**{**vars_of(app.config), "max_subscriptions_per_user": 256}))
    total, reserved = 256, app.config.subscriptions_reserved_for_root
    async with as_user(NOBODY, [], _subscriber, any_bus.address, 15) as greedy:
        assert greedy["granted"] == total - reserved
        assert "kept for root (SubscriptionsReservedForRoot)" in greedy["refusals"][-1][1]
        async with as_user(OTHER, [], _subscriber, any_bus.address, 1) as other:
            assert other["granted"] == 0
        # Root (this process) takes the reserve, to the last one.
        async with as_user(0, [], _subscriber, any_bus.address, 3) as root:
            assert root["granted"] == reserved
            assert "at most 256 subscriptions" in root["refusals"][-1][1]


# --- credentials ---------------------------------------------------------------------------


async def test_the_credentials_of_a_connection_that_left_are_forgotten(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    service = app.service
    assert service is not None
    async with as_user(NOBODY, [STEER.gr_gid], _client, any_bus.address, False) as nobody:
        known = service.credentials.get(nobody["name"])
        assert known is not None and known.uid == NOBODY
        assert STEER.gr_gid in known.gids
    await wait_until(
        lambda: service.credentials.get(nobody["name"]) is None, what="its credentials forgotten"
    )
    assert len(service.credentials) == 0


async def test_credentials_of_a_connection_leaving_while_asked_for_are_not_kept(
    test_bus: TestBus, bus: MessageBus
) -> None:
    cache = CredentialCache(bus)
    other = await connect(test_bus)
    name = other.unique_name
    asked = asyncio.ensure_future(cache.lookup(name))
    # Polled at every turn of the loop: the answer cannot be read in the same turn.
    await wait_until(lambda: cache.asking(name), interval=0, what="the question sent")
    cache.forget(name)  # as when its NameOwnerChanged comes before the answer
    answer = await asked
    assert answer is not None and answer.uid == 0
    assert cache.get(name) is None and not cache.asking(name)
    await disconnect(other)

    # The bus daemon lets the name go when it reads the socket's end, which may
    # come after a question we send now (a busy machine made that race real).
    async def gone() -> bool:
        return not await has_owner(bus, name)

    await wait_until(gone, what="the bus daemon letting the connection's name go")
    # Asked about a connection that is gone: no credentials, nothing kept.
    assert await cache.lookup(name) is None
    assert len(cache) == 0


# --- the client library and ble-scanner ------------------------------------------------------


async def _cli_and_client(address: str) -> dict[str, Any]:
    """``ble-scanner pause`` and ``ScannerClient.request_active_scan``, refused."""
    out: dict[str, Any] = {}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out["code"] = await cli.run(
            cli.build_parser().parse_args(["--bus", address, "pause", ADAPTER, "5"]), io.StringIO()
        )
    out["stderr"] = err.getvalue()
    async with ScannerClient(bus_address=address) as client:
        try:
            await client.request_active_scan("", 5)
            out["client"] = "granted"
        except AccessDeniedError as exc:
            out["client"] = [type(exc).__name__, exc.text]
    return out


async def test_the_client_and_ble_scanner_say_no_clearly(
    any_bus: TestBus, sim: BluezSimulator, app: ScannerApp
) -> None:
    async with as_user(NOBODY, [], _cli_and_client, any_bus.address) as nobody:
        assert nobody["code"] == cli.EXIT_DENIED
        lines = nobody["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("ble-scanner: "), lines
        assert "AccessDenied" in lines[0] and "Traceback" not in nobody["stderr"]
        assert nobody["client"][0] == "AccessDeniedError"
        if is_open(any_bus):
            assert "PauseScan needs root or membership of group" in lines[0]
    assert len(app.leases) == 0
    # Root may: the lease is held until released.
    async with ScannerClient(bus_address=any_bus.address) as client:
        path = await client.pause_scan(ADAPTER, 5)
        assert path.startswith("/Lease/") and len(app.leases) == 1
        await client.release_lease(path)
        assert len(app.leases) == 0
