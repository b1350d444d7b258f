"""The orchestrator: starts the bus and the processes, runs each scenario, prints and saves.

Each scenario compares the service with its baseline in the same run; with
``--repeat N`` every figure is the median of N runs (the machine is shared, so
single runs are noisy). The scenarios that depend on how the service hears
advertisements run once per ingest (``--ingest mgmt|dbus``, default both). ``--smoke`` runs each scenario once, small and short,
to prove the benchmark still works (CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.testing.localsettings import Setting as LocalSetting
from ble_scanner.testing.localsettings import ble_sensors_settings
from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests.bench.common import RELAY_NAME, RELAY_POLICY, cpu_seconds, cpu_split, rss_bytes
from tests.bench.simproc import ingest_address
from tests.helpers import NO_LOAD_BUDGET

REPO: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS: Final = (
    "ingest",
    "burst",
    "latency",
    "fanout",
    "programs",
    "memory",
    "snapshot",
    "startup",
    "loadcap",
    "feed",
)
# The service's two ways of hearing advertisements (docs/behaviour.md "Ingest"):
# the kernel's management channel (here the simulator's seam) and BlueZ's D-Bus
# signals.
# The first is the primary: scenarios that measure one service use it.
INGESTS: Final = ("mgmt", "dbus")
# These scenarios run once per ingest, side by side with the same-run baseline.
PER_INGEST: Final = ("ingest", "burst", "latency", "fanout", "programs")
# These run once per scene too: fanout/counter/mgmt, programs/readings/dbus.
PER_SCENE: Final = ("fanout", "programs")
# The fan-out scene twice (tests/bench/README.md): readings that change once a
# second, and every report carrying new content (a counter, as Victron instant
# readout, Ruuvi and Mopeka send).
SCENES: Final = ("readings", "counter")

# The goals of tests/bench/README.md, as same-run ratios where a baseline exists.
INGEST_RATIO: Final = 0.7  # sustained, no loss, against the relay
BURST_RATIO: Final = 1.0  # flat-out to one AllReports subscriber, management ingest
LATENCY_RATIO: Final = {"mgmt": 1.0, "dbus": 1.5}  # p99 against the relay
LATENCY_BATCH_RATE: Final = 1000  # where the batched subscriber's p99 is judged
FANOUT_RATIO: Final = {"mgmt": 0.35, "dbus": 0.6}  # bus daemon included on both sides
# Programs through the service against the same programs on their own (issue 22):
# five bleak programs, five ScannerClient programs; bus daemon counted.
PROGRAMS_RATIO: Final = {"readings": 0.3, "counter": 0.5}
# The service's CPU per report in the counter scene (management ingest, the five
# raw one-per-report subscribers) before issue 22: main at ad33c83 with this
# harness, median of three runs (100.1, 111.0, 100.2 µs) interleaved with the
# batched service's, load average 7-20 on the 2-vCPU VM (tests/bench/README.md,
# "Latest figures"). The goal is at most half of it; a constant measured on a
# busy machine, so the comparison is rough.
US_PER_REPORT_BEFORE: Final = 100.2
US_PER_REPORT_RATIO: Final = 0.5
SNAPSHOT_RATIO: Final = 0.5  # against GetManagedObjects of the same devices
MEMORY_PER_DEVICE: Final = 2048  # bytes, at 10 000 devices
STARTUP_BOUND: Final = 1.5  # seconds to discovery started
GOALS: Final = {
    "ingest": f">= {INGEST_RATIO}x relay",
    "burst/mgmt": f">= {BURST_RATIO}x relay, nothing lost",
    "burst/dbus": "nothing lost",
    "burst/batch": f">= {BURST_RATIO}x relay, nothing lost (management ingest)",
    "latency/mgmt": f"p99 <= {LATENCY_RATIO['mgmt']}x relay",
    "latency/dbus": f"p99 <= {LATENCY_RATIO['dbus']}x relay",
    "fanout/mgmt": f"CPU with bus daemon <= {FANOUT_RATIO['mgmt']}x no-daemon",
    "fanout/dbus": f"CPU with bus daemon <= {FANOUT_RATIO['dbus']}x no-daemon",
    "programs/readings": f"CPU with bus daemon <= {PROGRAMS_RATIO['readings']}x the same "
    "programs on their own, every reading delivered",
    "programs/counter": f"CPU with bus daemon <= {PROGRAMS_RATIO['counter']}x the same "
    "programs on their own, every reading delivered",
    "memory": f"<= {MEMORY_PER_DEVICE} B/device",
    "snapshot": f"p50 <= {SNAPSHOT_RATIO}x GetManagedObjects of the same devices",
    "startup": f"<= {STARTUP_BOUND} s to discovery started",
    "loadcap": "shed CPU <= cap x 1.25, specific devices all delivered",
    "feed": "no datagram lost, service CPU <= 1.1x feed off",
}
# Feeding dbus-ble-sensors may cost the service at most 10 % more CPU (tests/bench/README.md).
FEED_CPU_RATIO: Final = 1.1
# A rate step passes when every report arrived and the p99 latency stayed under
# this: a pipeline that keeps up answers in milliseconds, while one that is 10 %
# short of the offered rate has fallen ~270 ms behind by the end of a 3 s step.
INGEST_LAG_BOUND: Final = 0.25
# After the last report, how long the pipeline has to deliver what is in flight.
DELIVERY_GRACE: Final = 1.0
# A burst's backlog may take longer than that to drain: delivery counts as over
# once nothing more arrived for DELIVERY_GRACE, or after this.
BURST_DRAIN_LIMIT: Final = 60.0
# The simulator must offer at least this share of the asked rate, or the step
# measured the simulator, not the pipeline.
OFFERED_SHARE: Final = 0.95
# Every report for an AllReports subscriber: what the ingest, burst and latency
# clients of the service ask for (the broadcast is at most once a second per device).
ALL_REPORTS: Final = {"AllReports": True}
# The batched subscriber of the burst and the latency scenarios: every report a
# wake-up produced in one signal, no window (issue 22).
BATCH: Final = {"Batch": True}
# How long a service has to report the ingest it was asked for: GetStatus
# lists an adapter only once the service has found it on BlueZ.
INGEST_WAIT: Final = 10.0


def result_keys(
    only: Sequence[str],
    ingests: Sequence[str],
    plan: Plan | None = None,
    scenes: Sequence[str] = SCENES,
) -> list[str]:
    """The scenarios' keys in the results: ``burst/mgmt``, ``fanout/counter/dbus``, ``memory``.

    A plan without ``every_program`` (the smoke run) runs the programs in the
    counter scene on the first ingest only.
    """
    keys: list[str] = []
    for name in SCENARIOS:
        if name not in only:
            continue
        if name == "programs" and plan is not None and not plan.every_program:
            keys += [f"programs/counter/{ingests[0]}"] if "counter" in scenes else []
        elif name in PER_SCENE:
            keys += [f"{name}/{scene}/{ingest}" for scene in scenes for ingest in ingests]
        elif name in PER_INGEST:
            keys += [f"{name}/{ingest}" for ingest in ingests]
        else:
            keys.append(name)
    return keys


def goal_of(key: str) -> str:
    """``fanout/counter/mgmt`` → the goal of ``fanout/mgmt``; ``programs/counter/mgmt`` →
    that of ``programs/counter``."""
    parts = key.split("/")
    return GOALS.get(f"{parts[0]}/{parts[-1]}") or GOALS.get("/".join(parts[:2])) or GOALS[parts[0]]


@dataclass(frozen=True)
class Plan:
    """How long and how large each scenario is."""

    repeats: int
    ingest_start: int
    ingest_max: int
    ingest_duration: float
    ingest_bisections: int
    ingest_devices: int
    burst_count: int
    latency_rates: tuple[int, ...]
    latency_duration: float
    scene_devices: int
    scene_period: float
    scene_change_every: int  # reports per reading in the "readings" scene (once a second)
    scene_duration: float
    memory_sizes: tuple[int, int]
    snapshot_calls: int
    startup_repeats: int
    loadcap_cap: int
    loadcap_rates: tuple[int, ...]
    loadcap_duration: float
    loadcap_settle: float
    # Off in the smoke run, to keep it short: the batched fan-out modes run in
    # the counter scene on the first ingest only, the programs likewise.
    every_program: bool = True


FULL: Final = Plan(
    repeats=3,
    ingest_start=1000,
    ingest_max=64000,
    ingest_duration=3.0,
    ingest_bisections=3,
    ingest_devices=50,
    burst_count=20000,
    latency_rates=(200, 1000, 2500),
    latency_duration=4.0,
    scene_devices=200,
    scene_period=0.2,
    scene_change_every=5,
    scene_duration=10.0,
    memory_sizes=(1000, 10000),
    snapshot_calls=60,
    startup_repeats=3,
    loadcap_cap=20,
    loadcap_rates=(12000, 24000),
    loadcap_duration=20.0,
    loadcap_settle=9.0,
)
SMOKE: Final = Plan(
    repeats=1,
    ingest_start=500,
    ingest_max=500,
    ingest_duration=1.0,
    ingest_bisections=0,
    ingest_devices=20,
    burst_count=2000,
    latency_rates=(200,),
    latency_duration=1.0,
    scene_devices=200,
    scene_period=0.5,
    scene_change_every=2,
    scene_duration=1.5,
    memory_sizes=(1000, 2000),
    snapshot_calls=10,
    startup_repeats=1,
    loadcap_cap=5,
    loadcap_rates=(4000,),
    loadcap_duration=3.0,
    loadcap_settle=1.5,
    every_program=False,
)


class BenchError(RuntimeError):
    pass


class Proc:
    """A child process spoken to with JSON lines (see ``common.commands``)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: str) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.ready: dict[str, Any] = {}  # what it said when it was ready

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def ask(self, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.process.stdin.drain()
        return await self.read(timeout)

    async def read(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name} did not answer within {timeout} s") from None
        if not line:
            raise BenchError(f"{self.name} exited: {self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    @property
    def connection_lost(self) -> bool:
        """dbus-fast closed this process's bus (EAGAIN, python-dbus-next#153), or it exited."""
        if not self.alive:
            return True
        try:
            with open(self.log) as f:
                return "BlockingIOError" in f.read()
        except OSError:
            return False

    def tail(self, lines: int = 6) -> str:
        try:
            with open(self.log) as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class Bench:
    """One private bus and one simulator process for the whole run."""

    def __init__(
        self,
        plan: Plan,
        workdir: str,
        harden: bool = True,
        profile: bool = False,
        ingests: Sequence[str] = INGESTS,
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.harden = harden
        self.profile = profile
        self.ingests = tuple(ingests)
        # The simulator serves the management-channel seam here when a run uses it.
        self.mgmt_socket = os.path.join(workdir, "mgmt.sock") if "mgmt" in ingests else ""
        self.py_spy = ""  # the py-spy command, when sampling the service in fan-out
        self.scenes: tuple[str, ...] = SCENES  # the fan-out scenes to run
        self.service_args: tuple[str, ...] = ()  # --service-arg: ablations
        self.bus: TestBus | None = None
        self.sim: Proc | None = None
        # (design, scene) → the no-service run of this repeat, shared by fanout and programs.
        self.baselines: dict[tuple[str, str], dict[str, Any]] = {}
        self._run = 0
        self._count = 0

    def next_run(self) -> int:
        self._run += 1
        return self._run

    @property
    def env(self) -> dict[str, str]:
        assert self.bus is not None
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address, "PYTHONPATH": REPO}

    async def spawn(self, name: str, argv: Sequence[str], control: bool = True) -> Proc:
        self._count += 1
        log = os.path.join(self.workdir, f"{self._count:03d}-{name}.log")
        with open(log, "wb") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE if control else subprocess.DEVNULL,
                stdout=subprocess.PIPE if control else subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
                env=self.env,
                start_new_session=True,
            )
        proc = Proc(name, process, log)
        if control:
            proc.ready = await proc.read()  # {"ready": true, ...}
        return proc

    async def client(self, name: str = "client") -> Proc:
        return await self.spawn(name, [sys.executable, "-m", "tests.bench.client"])

    def launcher(self, name: str) -> list[str]:
        """``tests.bench.launch`` with this run's instruments (hardened writer, cProfile)."""
        argv = [sys.executable, "-m", "tests.bench.launch"]
        if self.harden:
            argv.append("--harden")
        if self.profile:
            argv += ["--profile", os.path.join(self.workdir, f"{self._count + 1:03d}-{name}.prof")]
        return argv

    @property
    def primary(self) -> str:
        """The ingest of the scenarios that measure one service (memory, start-up, ...)."""
        return self.ingests[0]

    def ingest_options(self, ingest: str) -> tuple[str, ...]:
        """Always explicit: run as root, ``auto`` would open the kernel's real channel."""
        if ingest == "mgmt":
            return ("--ingest", "mgmt", "--mgmt-socket", self.mgmt_socket)
        return ("--ingest", ingest)

    async def check_ingest(self, client: Proc, ingest: str) -> None:
        """Wait until the service says (GetStatus) it hears the adapter on ``ingest``.

        A management ingest that fell back to D-Bus would measure the wrong path
        under the right name.
        """
        deadline = time.monotonic() + INGEST_WAIT
        while True:
            adapters = (await client.ask("ingest"))["adapters"]
            if adapters and all(used == ingest for used in adapters.values()):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the service was asked for {ingest} ingest; it says {adapters}")
            await asyncio.sleep(0.05)

    async def service(
        self,
        direct: bool = False,
        options: Sequence[str] = (),
        settings: bool = False,
        ingest: str = "",
    ) -> Proc:
        """The service process; ``direct`` starts it exactly as Venus does, with no launcher.

        ``settings``: use the localsettings stand-in the scenario started
        (waiting for it as a GX start would not need to). ``ingest``: "mgmt"
        or "dbus", the primary when not given.
        """
        argv = [sys.executable] if direct else self.launcher("service")
        # No localsettings on the bench bus: do not wait for it (on a GX it is up first).
        # No state file: every scenario starts with an empty cache. The load
        # budget is off unless asked for: other people's load on the machine
        # must not make the other scenarios shed.
        command = [
            *argv,
            "dbus_ble_scanner.py",
            *(("--settings-wait", "10") if settings else ("--no-settings",)),
            "--state-file",
            "",
            *NO_LOAD_BUDGET,
            *self.ingest_options(ingest or self.primary),
            *options,
            *self.service_args,
        ]
        return await self.spawn("service", command, False)

    async def relay(self, direct: bool = False) -> Proc:
        argv = [sys.executable] if direct else self.launcher("relay")
        return await self.spawn("relay", [*argv, "-m", "tests.bench.relay"], control=False)

    async def sessions(self, count: int) -> None:
        assert self.sim is not None
        if not (await self.sim.ask("wait_sessions", count=count))["ok"]:
            raise BenchError(f"the adapter did not reach {count} discovery session(s)")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bench]:
        self.bus = start_test_bus({"benchrelay.conf": RELAY_POLICY})
        try:
            seam = ("--mgmt-socket", self.mgmt_socket) if self.mgmt_socket else ()
            self.sim = await self.spawn(
                "simulator", [sys.executable, "-m", "tests.bench.simproc", *seam]
            )
            try:
                yield self
            finally:
                with contextlib.suppress(Exception):
                    await self.sim.ask("quit", timeout=5)
                await self.sim.stop()
        finally:
            self.bus.stop()


@contextlib.asynccontextmanager
async def target(
    bench: Bench, kind: str, ingest: str = "", options: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Proc, Proc]]:
    """The service (on ``ingest``) or the relay, scanning, with one client hearing every report.

    ``options``: the service's subscriber's Subscribe options besides AllReports (Batch).
    """
    proc = await (bench.service(ingest=ingest) if kind == "service" else bench.relay())
    client: Proc | None = None
    try:
        await bench.sessions(1)
        client = await bench.client(f"{kind}-client")
        if kind == "service":
            await client.ask("listen", mode="subscribe", filter={**ALL_REPORTS, **(options or {})})
            await bench.check_ingest(client, ingest or bench.primary)
        else:
            await client.ask("listen", mode="relay")
        yield proc, client
    finally:
        if client is not None:
            await client.stop()
        await proc.stop()
        await bench.sessions(0)


async def rate_step(
    bench: Bench, targets: dict[str, tuple[Proc, Proc]], rate: float, duration: float
) -> dict[str, dict[str, Any]]:
    """Offer ``rate`` reports/s for ``duration``; what arrived at each target's client, and how late.

    ``targets`` maps a name to (the process under test, its listening client);
    with more than one, they hear the same reports at the same time.
    """
    assert bench.sim is not None
    run = bench.next_run()
    for _, client in targets.values():
        await client.ask("reset", run=run)
    offered = await bench.sim.ask(
        "ingest",
        rate=rate,
        duration=duration,
        run=run,
        devices=bench.plan.ingest_devices,
        timeout=duration * 4 + 30,
    )
    deadline = time.monotonic() + DELIVERY_GRACE
    waiting = dict(targets)
    while waiting and time.monotonic() < deadline:
        for name, (proc, client) in list(waiting.items()):
            if proc.connection_lost or (await client.ask("count"))["received"] >= offered["sent"]:
                del waiting[name]
        await asyncio.sleep(0.05)
    steps = {}
    for name, (proc, client) in targets.items():
        stats = await client.ask("stats")
        latency = {k: v * 1000 if k != "n" else v for k, v in stats["latency"].items()}
        lost = proc.connection_lost
        steps[name] = {
            "rate": rate,
            "sent": offered["sent"],
            "received": stats["received"],
            "offered": round(offered["achieved"]),
            "latency_ms": latency,
            "ok": (
                not lost
                and stats["received"] == offered["sent"]
                and latency["p99"] <= INGEST_LAG_BOUND * 1000
                and offered["achieved"] >= OFFERED_SHARE * rate
            ),
            "died": proc.tail() if lost else None,
        }
    return steps


async def _ingest_step(
    bench: Bench, proc: Proc, client: Proc, rate: float, steps: list[dict[str, Any]]
) -> bool:
    """One rung of the ladder; a failure is tried once more before it counts.

    The machine is shared: one burst of someone else's work can push a p99 past
    the bound at a rate the pipeline otherwise sustains.
    """
    for _ in range(2):
        targets = {"x": (proc, client)}
        step = (await rate_step(bench, targets, rate, bench.plan.ingest_duration))["x"]
        steps.append(step)
        if step["ok"] or step["died"]:
            return bool(step["ok"])
    return False


# After the warm-up reports, before a timed run: the target's backlog of them
# drains. The relay forwards no InterfacesAdded, so no client can count them
# arriving; this is a settling pause of the benchmark, not a test's wait.
WARM_SETTLE = 0.3


async def warm(bench: Bench) -> None:
    """Create the ingest devices, so that a timed run sees only reports of known devices."""
    assert bench.sim is not None
    await bench.sim.ask("warm", devices=bench.plan.ingest_devices)
    await asyncio.sleep(WARM_SETTLE)


async def ingest_ladder(bench: Bench, proc: Proc, client: Proc) -> dict[str, Any]:
    """Double the rate until a step fails, then bisect: the highest rate with no loss."""
    plan = bench.plan
    assert bench.sim is not None
    await warm(bench)
    steps: list[dict[str, Any]] = []
    best, worst = 0.0, 0.0
    rate = float(plan.ingest_start)
    while rate <= plan.ingest_max:
        if not await _ingest_step(bench, proc, client, rate, steps):
            worst = rate
            break
        best = rate
        rate *= 2
    for _ in range(plan.ingest_bisections if worst and best else 0):
        if proc.connection_lost:
            break
        rate = (best + worst) / 2
        if await _ingest_step(bench, proc, client, rate, steps):
            best = rate
        else:
            worst = rate
    limited_by = "pipeline" if worst else "ladder top"
    if steps and not steps[-1]["ok"] and steps[-1]["offered"] < OFFERED_SHARE * steps[-1]["rate"]:
        limited_by = "simulator"
    died = next((s["died"] for s in steps if s["died"]), None)
    return {"rate": best, "limited_by": limited_by, "died": died, "steps": steps}


async def ingest(bench: Bench) -> dict[str, Any]:
    """The rate ladder, for the relay and then the service on each ingest (each alone)."""
    results: dict[str, dict[str, Any]] = {}
    async with target(bench, "relay") as (proc, client):
        relay = await ingest_ladder(bench, proc, client)
    for name in bench.ingests:
        async with target(bench, "service", name) as (proc, client):
            service = await ingest_ladder(bench, proc, client)
        results[f"ingest/{name}"] = {
            "service_rate": service["rate"],
            "relay_rate": relay["rate"],
            "ratio": _ratio(service["rate"], relay["rate"]),
            "detail": {"service": service, "relay": relay},
        }
    return results


async def burst_once(
    bench: Bench, kind: str, ingest: str = "", options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``burst_count`` reports as fast as the simulator emits them; what arrived, how fast.

    The rate is the reports received over the time from the first emission to
    the last arrival, so a pipeline that falls behind and catches up later is
    charged for it; what never arrived is counted as lost.
    """
    plan = bench.plan
    assert bench.sim is not None
    async with target(bench, kind, ingest, options) as (proc, client):
        await warm(bench)
        run = bench.next_run()
        await client.ask("reset", run=run)
        sent = await bench.sim.ask(
            "burst",
            count=plan.burst_count,
            run=run,
            devices=plan.ingest_devices,
            timeout=BURST_DRAIN_LIMIT,
        )
        deadline = time.monotonic() + BURST_DRAIN_LIMIT
        received, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and not proc.connection_lost:
            now_received = (await client.ask("count"))["received"]
            if now_received >= sent["sent"]:
                break
            if now_received != received:
                received, quiet_since = now_received, time.monotonic()
            elif time.monotonic() - quiet_since > DELIVERY_GRACE:
                break
            await asyncio.sleep(0.05)
        stats = await client.ask("stats")
        span = stats["last"] - sent["t0"]
        return {
            "sent": sent["sent"],
            "received": stats["received"],
            "lost": sent["sent"] - stats["received"],
            "rate": stats["received"] / span if stats["received"] and span > 0 else 0.0,
            "emitted_rate": sent["achieved"],
            "latency_ms": {k: v * 1000 if k != "n" else v for k, v in stats["latency"].items()},
            "signals": stats["signals"],
            "died": proc.tail() if proc.connection_lost else None,
        }


async def burst(bench: Bench) -> dict[str, Any]:
    """The flat-out burst to one AllReports subscriber on each ingest, the relay just before;
    then the same burst to one subscriber that asked for batches (``Batch``, no window)."""
    results: dict[str, dict[str, Any]] = {}
    for name in bench.ingests:
        relay = await burst_once(bench, "relay")
        service = await burst_once(bench, "service", name)
        batch = await refused(burst_once(bench, "service", name, BATCH))
        if "refused" not in batch:
            batch = {
                "service": batch,
                "ratio": _ratio(batch["rate"], relay["rate"]),
                "lost": batch["lost"],
                "goal": GOALS["burst/batch"] if name == "mgmt" else GOALS["burst/dbus"],
            }
        results[f"burst/{name}"] = {
            "service": service,
            "relay": relay,
            "ratio": _ratio(service["rate"], relay["rate"]),
            "lost": service["lost"],
            "batch": batch,
        }
    return results


async def latency(bench: Bench) -> dict[str, Any]:
    """Emit → callback through the service on each ingest and through the relay, same reports."""
    return {f"latency/{name}": await latency_once(bench, name) for name in bench.ingests}


async def latency_once(bench: Bench, ingest: str) -> dict[str, Any]:
    """Emit → callback through the service and through the relay, on the same reports.

    Both run at once, each with its own client, so that both paths see the
    same reports under the same load; the machine is shared, and separate runs
    would compare two different moments of other people's work as much as the
    two designs.
    """
    plan = bench.plan
    assert bench.sim is not None
    relay, service = await bench.relay(), await bench.service(ingest=ingest)
    clients: list[Proc] = []
    try:
        await bench.sessions(2)
        relay_client = await bench.client("relay-client")
        clients.append(relay_client)
        await relay_client.ask("listen", mode="relay")
        service_client = await bench.client("service-client")
        clients.append(service_client)
        await service_client.ask("listen", mode="subscribe", filter=ALL_REPORTS)
        await bench.check_ingest(service_client, ingest)
        targets = {"service": (service, service_client), "relay": (relay, relay_client)}
        batch_client = await bench.client("batch-client")
        clients.append(batch_client)
        batched = await refused(
            batch_client.ask("listen", mode="subscribe", filter={**ALL_REPORTS, **BATCH})
        )
        if "refused" not in batched:
            targets["batch"] = (service, batch_client)
        await warm(bench)
        out: dict[str, Any] = {}
        for rate in plan.latency_rates:
            # CPU a report, the service's against the relay's: the relay is the least a
            # process that wakes for each frame and sends a signal for it pays.
            cpu0 = {"service": cpu_seconds(service.pid), "relay": cpu_seconds(relay.pid)}
            steps = await rate_step(bench, targets, rate, plan.latency_duration)
            cpu1 = {"service": cpu_seconds(service.pid), "relay": cpu_seconds(relay.pid)}
            figures: dict[str, Any] = {
                name: {**step["latency_ms"], "lost": step["sent"] - step["received"]}
                for name, step in steps.items()
            }
            sent = max(1, steps["relay"]["sent"])
            figures["cpu_us_per_report"] = {
                name: 1e6 * (cpu1[name] - cpu0[name]) / sent for name in cpu0
            }
            figures["p99_ratio"] = _ratio(figures["service"]["p99"], figures["relay"]["p99"])
            if "batch" in figures:
                figures["batch_p99_ratio"] = _ratio(
                    figures["batch"]["p99"], figures["relay"]["p99"]
                )
            out[str(rate)] = figures
        if "refused" in batched:
            out["batch_refused"] = batched["refused"]
        return out
    finally:
        for client in clients:
            await client.stop()
        await service.stop()
        await relay.stop()
        await bench.sessions(0)


# Five clients, each wanting a different slice of the scene (simproc.scene_report),
# and which of the scene's devices (by index) each slice holds.
FANOUT_SLICES: Final = (
    {"ManufacturerIds": [0x02E1]},  # Victron
    {"ManufacturerIds": [0x0499]},  # Ruuvi
    {"Addresses": [f"D0:00:00:00:00:{i:02X}" for i in range(0, 200, 20)]},
    {"ServiceUuids": ["0000181a-0000-1000-8000-00805f9b34fb"]},  # environmental sensing
    {"ServiceDataUuids": ["0000fcd2-0000-1000-8000-00805f9b34fb"]},  # BTHome
)
SLICE_DEVICES: Final[tuple[Callable[[int], bool], ...]] = (
    lambda i: i % 5 == 0,
    lambda i: i % 5 == 1,
    lambda i: i % 20 == 0 and i < 200,
    lambda i: i % 5 == 4,
    lambda i: i % 5 == 3,
)
# How the five raw subscribers ask (issue 22): one DeviceDiscovered per report,
# DevicesDiscovered batches, and batches of only the keys that changed; the
# last with a window too (not what the shipped clients ask for: it shows what a
# window would buy where a wake-up holds few reports, as in this scene).
SUBSCRIBE_MODES: Final[dict[str, dict[str, Any]]] = {
    "one_per_report": {},
    "batch": {"Batch": True},
    "batch_changed": {"Batch": True, "ChangedKeysOnly": True},
    "batch_changed_window": {"Batch": True, "ChangedKeysOnly": True, "BatchWindow": 0.1},
}
MODE_LABELS: Final = {
    "batch": "Batch",
    "batch_changed": "Batch + ChangedKeysOnly",
    "batch_changed_window": "Batch + ChangedKeysOnly + BatchWindow 0.1 s",
}
# The fan-out's designs: which processes run, and whether the service does.
# "bluez": five minimal programs on BlueZ's signals (client.py), the no-daemon
# design; "bleak": five bleak programs on bleak's own BlueZ backend; "service":
# the five raw subscribers; "bleak-service": the five bleak programs with
# backend=ScannerServiceBackend; "scannerclient": five ScannerClient programs.
WITH_SERVICE: Final = ("service", "bleak-service", "scannerclient")
# After the scene, how long the programs have to get its last readings.
SCENE_DRAIN: Final = 3.0


def scene_expected(counts: Sequence[int], change_every: int) -> list[int]:
    """Each slice's readings in a scene whose devices reported ``counts`` times."""
    readings = [-(-c // change_every) for c in counts]  # a reading every change_every reports
    return [sum(r for i, r in enumerate(readings) if wants(i)) for wants in SLICE_DEVICES]


async def fanout_once(
    bench: Bench,
    design: str,
    scene: str = "readings",
    ingest: str = "",
    feed: bool | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fan-out scene; ``feed`` (service only) adds localsettings holding dbus-ble-sensors'
    settings and a receiver process counting datagrams, the feed switched on or off.

    ``scene``: "readings" change once a second, "counter" changes with every
    report. ``design``: see ``WITH_SERVICE``; ``options``: the raw
    subscribers' Subscribe options (``SUBSCRIBE_MODES``). Every program is
    checked to have got every reading of the devices it wants (``complete``).
    """
    plan = bench.plan
    assert bench.sim is not None and bench.bus is not None
    extras: list[Proc] = []
    receiver: Proc | None = None
    count_file = os.path.join(bench.workdir, f"feed-{bench._count}.count")
    if feed is not None:
        receiver = await bench.spawn(
            "blesensors-receiver",
            [sys.executable, "-m", "ble_scanner.testing.blesensors_socket", "--port", "0",
             "--count-file", count_file],
        )  # fmt: skip
        extras.append(receiver)
        port = receiver.ready["port"]
        store = os.path.join(bench.workdir, f"settings-{bench._count}.json")
        with open(store, "w") as f:
            json.dump(_feed_settings(port, feed), f)
        extras.append(
            await bench.spawn(
                "localsettings",
                [sys.executable, "-m", "ble_scanner.testing.localsettings", "--path", store],
                control=False,
            )
        )
    service = (
        await bench.service(settings=feed is not None, ingest=ingest)
        if design in WITH_SERVICE
        else None
    )
    module = "tests.bench.client" if design in ("bluez", "service") else "tests.bench.program"
    clients: list[Proc] = []
    argv = [sys.executable, "-m", module]

    def program(i: int) -> list[str]:
        """``--profile``: the programs (not the raw clients) under cProfile too."""
        if not bench.profile or module != "tests.bench.program":
            return argv
        prof = os.path.join(bench.workdir, f"{design}-{scene}-{ingest}-{bench._count}-{i}.prof")
        return [sys.executable, "-m", "tests.bench.launch", "--profile", prof, "-m", module]

    try:
        if service is not None:
            await bench.sessions(1)
        # Started together: each is a Python process importing dbus-fast.
        started = await asyncio.gather(
            *(bench.spawn(f"{design}-fanout-{i}", program(i)) for i in range(len(FANOUT_SLICES))),
            return_exceptions=True,
        )
        clients += [c for c in started if isinstance(c, Proc)]
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed
        for i, (client, slice_) in enumerate(zip(clients, FANOUT_SLICES, strict=True)):
            if design == "service":
                await client.ask("listen", mode="subscribe", filter={**slice_, **(options or {})})
            elif design == "bluez":
                await client.ask("listen", mode="bluez", filter=slice_)
            elif design == "scannerclient":
                await client.ask("listen", kind="scannerclient", slice=i)
            else:
                backend = "service" if design == "bleak-service" else "bluez"
                await client.ask("listen", kind="bleak", backend=backend, slice=i)
        await bench.sessions(1 if service is not None else len(clients))
        if service is not None:
            # The programs do not speak the bench's commands: a probe asks for them.
            probe = clients[0] if design == "service" else await bench.client("ingest-probe")
            try:
                await bench.check_ingest(probe, ingest or bench.primary)
            finally:
                if probe is not clients[0]:
                    await probe.stop()
        await asyncio.sleep(0.3)
        run = bench.next_run()
        for client in clients:
            await client.ask("reset", run=run)
        measured = [p.pid for p in ([service] if service else []) + clients]
        daemon, sim = bench.bus.process.pid, bench.sim.pid
        before = {pid: cpu_seconds(pid) for pid in [*measured, daemon, sim]}
        # The service's system time apart: system calls (recv, send, epoll) per wake-up.
        service_sys0 = cpu_split(service.pid)[1] if service else 0.0
        spy = await _py_spy(bench, service, plan.scene_duration) if service else None
        change_every = plan.scene_change_every if scene == "readings" else 1
        played = await bench.sim.ask(
            "scene",
            devices=plan.scene_devices,
            period=plan.scene_period,
            change_every=change_every,
            duration=plan.scene_duration,
            first=run << 16,
            timeout=plan.scene_duration + 30,
        )
        expected = scene_expected(played["counts"], change_every)
        await asyncio.sleep(0.3)  # let the last reports through
        deadline = time.monotonic() + SCENE_DRAIN
        while True:
            stats = [await c.ask("stats") for c in clients]
            got = [s["readings"] for s in stats]
            if got == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        after = {pid: cpu_seconds(pid) for pid in before}
        service_sys = cpu_split(service.pid)[1] - service_sys0 if service else 0.0
        if spy is not None:
            await spy.wait()
        used = {pid: after[pid] - before[pid] for pid in before}
        fed: dict[str, Any] = {}
        if receiver is not None:
            await receiver.stop()  # it writes its count on SIGTERM
            with open(count_file) as f:
                fed = {"fed": played["fed"], "received": int(f.read())}
        return fed | {
            "cpu_s": sum(used[pid] for pid in measured),
            "service_cpu_s": used[service.pid] if service else 0.0,
            "service_sys_s": service_sys,
            "clients_cpu_s": sum(used[c.pid] for c in clients),
            "daemon_cpu_s": used[daemon],
            "simulator_cpu_s": used[sim],
            "reports": played["reports"],
            "callbacks": [s["callbacks"] for s in stats],
            "signals": [s["signals"] for s in stats],
            "readings": got,
            "expected_readings": expected,
            "complete": got == expected,
        }
    finally:
        for client in clients:
            await client.stop()
        if service is not None:
            await service.stop()
        for extra in extras:
            await extra.stop()
        await bench.sessions(0)


def _feed_settings(port: int, feed: bool) -> dict[str, dict[str, Any]]:
    """The localsettings stand-in's store: dbus-ble-sensors' settings, and our feed on or off."""
    stored = {path: dataclasses.asdict(s) for path, s in ble_sensors_settings(port=port).items()}
    stored["/Settings/BleScanner/BleSensorsFeed"] = dataclasses.asdict(
        LocalSetting("i", int(feed), 0, 0, 1)
    )
    return stored


async def feed(bench: Bench) -> dict[str, Any]:
    """The fan-out scene with the feed off, then on, same run: what feeding costs, what arrives."""
    off = await fanout_once(bench, "service", feed=False)
    on = await fanout_once(bench, "service", feed=True)
    return {
        "off": off,
        "on": on,
        "cpu_ratio": _ratio(on["service_cpu_s"], off["service_cpu_s"]),
        "lost": on["fed"] - on["received"],
        "received_while_off": off["received"],
        "rate": on["fed"] / bench.plan.scene_duration,
    }


async def _py_spy(bench: Bench, proc: Proc, duration: float) -> asyncio.subprocess.Process | None:
    """With ``--py-spy``, sample ``proc`` (native frames too) for ``duration`` seconds."""
    if not bench.py_spy:
        return None
    out = os.path.join(bench.workdir, f"{proc.name}-{proc.pid}.pyspy.txt")
    # py-spy's own words (why it could not sample) go next to its samples.
    with open(out + ".log", "w") as words:
        return await asyncio.create_subprocess_exec(
            *bench.py_spy.split(),
            "record",
            "--pid",
            str(proc.pid),
            "--duration",
            str(int(duration)),
            "--rate",
            "500",
            "--native",
            "--format",
            "raw",
            "-o",
            out,
            stdout=subprocess.DEVNULL,
            stderr=words,
        )


def _against(service: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A design's run against its baseline's, the bus daemon counted on both sides."""
    return {
        "service": service,
        "ratio": _ratio(
            service["cpu_s"] + service["daemon_cpu_s"], base["cpu_s"] + base["daemon_cpu_s"]
        ),
        "ratio_without_daemon": _ratio(service["cpu_s"], base["cpu_s"]),
        # What the ratio would be if the service cost nothing: the floor the
        # clients and the bus daemon set for this design.
        "floor": _ratio(
            service["clients_cpu_s"] + service["daemon_cpu_s"],
            base["cpu_s"] + base["daemon_cpu_s"],
        ),
        "service_us_per_report": 1e6 * service["service_cpu_s"] / max(1, service["reports"]),
        "complete": service["complete"] and base["complete"],
    }


async def baseline(bench: Bench, design: str, scene: str) -> dict[str, Any]:
    """The no-service design of a scene, run once per repeat and shared by the scenarios."""
    key = (design, scene)
    if key not in bench.baselines:
        bench.baselines[key] = await fanout_once(bench, design, scene)
    return bench.baselines[key]


async def refused(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``work``'s result, or what the service said if it refuses the options (a service
    before issue 22)."""
    try:
        return await work
    except BenchError as exc:
        if "InvalidArgs" not in str(exc):
            raise
        return {"refused": str(exc)[:200]}


async def fanout(bench: Bench) -> dict[str, Any]:
    """Each scene: the no-daemon design, then the service on each ingest, same run.

    On each ingest the five raw subscribers ask in each of ``SUBSCRIBE_MODES``.
    The ratio counts the bus daemon on both sides: the service's design sends
    fewer signals through it, the no-daemon design more (tests/bench/README.md).
    """
    results: dict[str, dict[str, Any]] = {}
    for scene in bench.scenes:
        direct = await baseline(bench, "bluez", scene)
        for name in bench.ingests:
            modes: dict[str, Any] = {}
            for mode, options in SUBSCRIBE_MODES.items():
                if not bench.plan.every_program and (
                    "BatchWindow" in options
                    or (options and (scene, name) != ("counter", bench.primary))
                ):
                    continue
                measured = await refused(
                    fanout_once(bench, "service", scene, name, options=options)
                )
                modes[mode] = measured if "refused" in measured else _against(measured, direct)
            one = modes.pop("one_per_report")
            results[f"fanout/{scene}/{name}"] = {**one, "no_daemon": direct, "modes": modes}
    return results


async def programs(bench: Bench) -> dict[str, Any]:
    """Each scene: five bleak programs and five ScannerClient programs, against the same
    five programs without the service (bleak's own BlueZ backend; BlueZ's signals).
    """
    results: dict[str, dict[str, Any]] = {}
    every = bench.plan.every_program
    for scene in bench.scenes if every else [s for s in bench.scenes if s == "counter"]:
        bleak_own = await baseline(bench, "bleak", scene)
        bluez = await baseline(bench, "bluez", scene)
        for name in bench.ingests if every else (bench.primary,):
            results[f"programs/{scene}/{name}"] = {
                "bleak": {
                    **_against(await fanout_once(bench, "bleak-service", scene, name), bleak_own),
                    "own_backend": bleak_own,
                },
                "scannerclient": {
                    **_against(await fanout_once(bench, "scannerclient", scene, name), bluez),
                    "bluez_signals": bluez,
                },
            }
    return results


async def wait_devices(client: Proc, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.ask("status"))["Devices"] >= count:
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the service did not cache {count} devices within {timeout} s")


async def memory_and_snapshot(bench: Bench) -> tuple[dict[str, Any], dict[str, Any]]:
    """RSS growth per cached device, and GetDiscoveredDevices at the smaller size."""
    plan = bench.plan
    assert bench.sim is not None
    small, large = plan.memory_sizes
    warm = 100  # first reports allocate once-only state; measure growth after them
    await bench.sim.ask("forget")  # BlueZ and the service hold the same devices
    service = await bench.service()
    client = await bench.client("snapshot-client")
    try:
        await bench.sessions(1)
        base = (await client.ask("status"))["Devices"]
        await bench.sim.ask("populate", start=0, count=warm)
        await wait_devices(client, base + warm)
        await asyncio.sleep(0.3)
        rss0 = rss_bytes(service.pid)
        await bench.sim.ask("populate", start=warm, count=small - warm)
        await wait_devices(client, base + small)
        await asyncio.sleep(0.3)
        rss_small = rss_bytes(service.pid)
        snap = await client.ask("snapshot", count=plan.snapshot_calls, timeout=120)
        managed = await client.ask("managed_objects", count=plan.snapshot_calls, timeout=120)
        await bench.sim.ask("populate", start=small, count=large - small, timeout=120)
        await wait_devices(client, base + large, timeout=120)
        await asyncio.sleep(0.3)
        rss_large = rss_bytes(service.pid)
    finally:
        await client.stop()
        await service.stop()
        await bench.sessions(0)
    memory = {
        "rss_mb": {
            "warm": rss0 / 2**20,
            str(small): rss_small / 2**20,
            str(large): rss_large / 2**20,
        },
        "bytes_per_device": {
            str(small): (rss_small - rss0) / (small - warm),
            str(large): (rss_large - rss0) / (large - warm),
        },
    }
    ms = {k: (v * 1000 if k not in ("n", "devices") else v) for k, v in snap.items()}
    ref = {k: (v * 1000 if k not in ("n", "devices") else v) for k, v in managed.items()}
    snapshot = {
        "devices": snap["devices"],
        "p50_ms": ms["p50"],
        "p99_ms": ms["p99"],
        "bluez_devices": managed["devices"],
        "bluez_get_managed_objects_ms": {"p50": ref["p50"], "p99": ref["p99"]},
        "ratio": _ratio(ms["p50"], ref["p50"]),
    }
    return memory, snapshot


async def startup(bench: Bench) -> dict[str, Any]:
    """Process start → name owned, and → discovery started (Discovering true)."""
    out: dict[str, Any] = {}
    for kind, name in (("relay", RELAY_NAME), ("service", SCANNER_SERVICE)):
        watcher = await bench.client("startup-watcher")
        named: list[float] = []
        discovering: list[float] = []
        try:
            await watcher.ask("watch", name=name)
            for _ in range(bench.plan.startup_repeats):
                await watcher.ask("watch_reset")
                t0 = time.monotonic()
                proc = await (
                    bench.service(direct=True) if kind == "service" else bench.relay(direct=True)
                )
                try:
                    deadline = t0 + 15
                    while time.monotonic() < deadline:
                        seen = await watcher.ask("watch_result")
                        if seen["name_owned"] and seen["discovering"]:
                            break
                        await asyncio.sleep(0.01)
                    else:
                        raise BenchError(f"{kind} did not start within 15 s: {proc.tail()}")
                    named.append(seen["name_owned"] - t0)
                    discovering.append(seen["discovering"] - t0)
                finally:
                    await proc.stop()
                    await bench.sessions(0)
        finally:
            await watcher.stop()
        out[kind] = {
            "name_owned_s": statistics.median(named),
            "discovering_s": statistics.median(discovering),
        }
    out["ratio"] = _ratio(out["service"]["discovering_s"], out["relay"]["discovering_s"])
    return out


# A subscriber asks for this many of the ingest devices, by address.
LOADCAP_WANTED: Final = 5
# The cap holds when the shed service stays within this factor of it.
LOADCAP_TOLERANCE: Final = 1.25


async def loadcap_once(bench: Bench, cap: int, rate: int) -> dict[str, Any]:
    """Offer far more than the service may take; its CPU share, and what the clients got.

    ``cap`` 0 is the same service with the load budget off, for comparison. The
    CPU share is measured after ``loadcap_settle`` seconds, once every step had
    time to come in (one per 2 s).
    """
    plan = bench.plan
    assert bench.sim is not None
    options = ("--shed-cpu-percent", str(cap)) if cap else ()
    every = plan.ingest_devices // LOADCAP_WANTED
    wanted = [ingest_address(i * every) for i in range(LOADCAP_WANTED)]
    service = await bench.service(options=options)
    clients: list[Proc] = []
    try:
        await bench.sessions(1)
        specific = await bench.client("loadcap-specific")
        clients.append(specific)
        await specific.ask("listen", mode="subscribe", filter={"Addresses": wanted})
        everything = await bench.client("loadcap-all-reports")
        clients.append(everything)
        await everything.ask("listen", mode="subscribe", filter={"AllReports": True})
        late = await bench.client("loadcap-late")
        clients.append(late)
        await warm(bench)
        run = bench.next_run()
        for client in clients[:2]:
            await client.ask("reset", run=run)
        offered = asyncio.create_task(
            bench.sim.ask(
                "ingest",
                rate=rate,
                duration=plan.loadcap_duration,
                run=run,
                devices=plan.ingest_devices,
                timeout=plan.loadcap_duration * 4 + 30,
            )
        )
        await asyncio.sleep(plan.loadcap_settle)
        for client in clients[:2]:
            await client.ask("reset", run=run)
        assert bench.bus is not None
        daemon = bench.bus.process.pid
        t0, cpu0, daemon0 = time.monotonic(), cpu_seconds(service.pid), cpu_seconds(daemon)
        sent = await offered
        t1, cpu1, daemon1 = time.monotonic(), cpu_seconds(service.pid), cpu_seconds(daemon)
        status = await late.ask("status")
        refused = (await late.ask("try_subscribe", filter={"AllReports": True}))["refused"]
        await asyncio.sleep(DELIVERY_GRACE)
        got = await specific.ask("stats")
        everything_got = await everything.ask("stats")
        return {
            "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "daemon_cpu_percent": 100 * (daemon1 - daemon0) / (t1 - t0),
            "offered_rate": round(sent["achieved"]),
            "step": status["LoadShedding"],
            "all_reports_refused": refused,
            "specific_devices": len(set(got["devices"]) & set(wanted)),
            "specific_signals": got["signals"],
            "specific_p99_ms": got["latency"]["p99"] * 1000,
            "all_reports_signals": everything_got["signals"],
        }
    finally:
        for client in clients:
            await client.stop()
        await service.stop()
        await bench.sessions(0)


async def loadcap(bench: Bench) -> dict[str, Any]:
    """At each rate, the same overload with the load budget off, then on."""
    plan = bench.plan
    rates: dict[str, Any] = {}
    for rate in plan.loadcap_rates:
        unbounded = await loadcap_once(bench, 0, rate)
        capped = await loadcap_once(bench, plan.loadcap_cap, rate)
        rates[str(rate)] = {
            "unbounded": unbounded,
            "capped": capped,
            "ratio": _ratio(capped["cpu_percent"], unbounded["cpu_percent"]),
        }
    return {"cap_percent": plan.loadcap_cap, "wanted_devices": LOADCAP_WANTED, "rates": rates}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median of numeric leaves; the first run's value for anything else."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in runs]
        if isinstance(value, dict):
            out[key] = _median_of([v for v in values if isinstance(v, dict)])
        elif isinstance(value, bool):  # "complete", "ok": only if every run was
            out[key] = all(v is True for v in values)
        elif isinstance(value, (int, float)):
            numbers = [v for v in values if isinstance(v, (int, float))]
            out[key] = statistics.median(numbers)
        else:
            out[key] = value
    return out


def _cpu(figures: dict[str, Any], name: str) -> str:
    """``; 95`` — a latency step's CPU a report of ``name``, when the run measured it."""
    cpu = figures.get("cpu_us_per_report")
    return f"; {cpu[name]:.0f}" if cpu else ""


def _judge_us_per_report(key: str, mode: dict[str, Any]) -> None:
    """The counter scene on management ingest: the service's µs per report against before."""
    if key == "fanout/counter/mgmt" and US_PER_REPORT_BEFORE:
        bound = US_PER_REPORT_BEFORE * US_PER_REPORT_RATIO
        mode["us_per_report_goal"] = f"<= {bound:.1f} us (half of {US_PER_REPORT_BEFORE} before)"
        mode["us_per_report_met"] = bool(mode["service_us_per_report"] <= bound)


def goal_met(key: str, result: dict[str, Any]) -> bool:
    """Whether the figures under ``key`` (``burst/mgmt``, ``fanout/counter/dbus``, ...) meet it."""
    name, ingest = key.split("/")[0], key.split("/")[-1]
    if name == "ingest":
        return bool(result["ratio"] >= INGEST_RATIO)
    if name == "burst":
        met = True
        for judged in (result, result["batch"]):
            if "refused" in judged:
                continue
            nothing_lost = judged["lost"] == 0 and not judged["service"]["died"]
            judged["met"] = nothing_lost and (
                ingest != "mgmt" or bool(judged["ratio"] >= BURST_RATIO)
            )
            met = met and judged["met"]
        return met
    if name == "latency":
        bound = LATENCY_RATIO[ingest]
        rates = {rate: r for rate, r in result.items() if isinstance(r, dict)}
        met = all(r["p99_ratio"] <= bound for r in rates.values())
        # The batched subscriber without a window, at 1 000 reports/s (issue 22).
        judged = rates.get(str(LATENCY_BATCH_RATE))
        if judged is not None and "batch_p99_ratio" in judged:
            result["batch_met"] = bool(judged["batch_p99_ratio"] <= bound)
            met = met and result["batch_met"]
        return met
    if name == "fanout":
        # The one-per-report subscribers, and each batched mode the service accepts.
        judged = [result, *(m for m in result["modes"].values() if "refused" not in m)]
        for mode in judged:
            mode["met"] = bool(mode["ratio"] <= FANOUT_RATIO[ingest] and mode["complete"])
            _judge_us_per_report(key, mode)
        return all(mode["met"] for mode in judged)
    if name == "programs":
        bound = PROGRAMS_RATIO[key.split("/")[1]]
        for kind in ("bleak", "scannerclient"):
            result[kind]["met"] = bool(result[kind]["ratio"] <= bound and result[kind]["complete"])
        return bool(result["bleak"]["met"] and result["scannerclient"]["met"])
    if name == "feed":
        return bool(result["lost"] == 0 and result["cpu_ratio"] <= FEED_CPU_RATIO)
    if name == "memory":
        return all(v <= MEMORY_PER_DEVICE for v in result["bytes_per_device"].values())
    if name == "snapshot":
        return bool(result["ratio"] <= SNAPSHOT_RATIO)
    if name == "startup":
        return bool(result["service"]["discovering_s"] <= STARTUP_BOUND)
    if name == "loadcap":
        return all(
            r["capped"]["cpu_percent"] <= result["cap_percent"] * LOADCAP_TOLERANCE
            and r["capped"]["specific_devices"] == result["wanted_devices"]
            for r in result["rates"].values()
        )
    raise KeyError(key)


async def run_all(
    plan: Plan,
    only: Sequence[str],
    progress: Callable[[str], None],
    harden: bool = True,
    profile: bool = False,
    py_spy: str = "",
    ingests: Sequence[str] = INGESTS,
    scenes: Sequence[str] = SCENES,
    service_args: Sequence[str] = (),
) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="ble-bench-")
    bench = Bench(plan, workdir, harden, profile, ingests)
    bench.scenes = tuple(scenes)
    bench.service_args = tuple(service_args)
    bench.py_spy = py_spy
    runs: dict[str, list[dict[str, Any]]] = {
        key: [] for key in result_keys(only, ingests, plan, scenes)
    }
    steps: tuple[tuple[str, str, Callable[[Bench], Any]], ...] = (
        ("ingest", "ingest", ingest),
        ("burst", "flat-out burst", burst),
        ("latency", "latency", latency),
        ("fanout", "fan-out", fanout),
        ("programs", "programs as users write them", programs),
    )
    load_before = os.getloadavg()
    started = time.time()
    async with bench.running():
        for i in range(plan.repeats):
            progress(f"run {i + 1}/{plan.repeats}")
            bench.baselines = {}
            for name, label, scenario in steps:
                if name in only:
                    progress(f"  {label} ({', '.join(bench.ingests)})")
                    for key, figures in (await scenario(bench)).items():
                        runs[key].append(figures)
            if "memory" in only or "snapshot" in only:
                progress("  memory + snapshot")
                memory, snapshot = await memory_and_snapshot(bench)
                if "memory" in runs:
                    runs["memory"].append(memory)
                if "snapshot" in runs:
                    runs["snapshot"].append(snapshot)
            if "startup" in only:
                progress("  start-up")
                runs["startup"].append(await startup(bench))
            if "loadcap" in only:
                progress("  load cap")
                runs["loadcap"].append(await loadcap(bench))
            if "feed" in only:
                progress("  feed to dbus-ble-sensors")
                runs["feed"].append(await feed(bench))
    scenarios: dict[str, Any] = {}
    for key, results in runs.items():
        merged = _median_of(results)
        merged["goal"] = goal_of(key)
        merged["met"] = goal_met(key, merged)
        if len(results) > 1:
            merged["runs"] = results
        scenarios[key] = merged
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "mode": "smoke" if plan is SMOKE else "full",
            "repeats": plan.repeats,
            "ingests": list(bench.ingests),
            "scenes": list(bench.scenes),
            "service_args": list(bench.service_args),
            "primary_ingest": bench.primary,
            "python": platform.python_version(),
            "dbus_fast": importlib.metadata.version("dbus-fast"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "commit": _git_commit(),
            "logs": workdir,
            "hardened_writer": harden,
        },
        "scenarios": scenarios,
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except Exception:
        return "unknown"


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


def _refused(result: dict[str, Any]) -> str:
    """A mode the service refused (before issue 22): say so in the table."""
    return "refused by the service (no Batch)" if "refused" in result else ""


def _us_goal(mode: dict[str, Any]) -> str:
    if "us_per_report_met" not in mode:
        return ""
    return f" ({mode['us_per_report_goal']}: {_yes(mode['us_per_report_met'])})"


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table: what the README quotes."""
    s = result["scenarios"]
    rows: list[tuple[str, str, str, str, str]] = []

    def mark(name: str) -> str:
        return "yes" if s[name]["met"] else "**no**"

    for key in [k for k in s if k.startswith("ingest/")]:
        i = s[key]
        rows.append(
            (
                f"Ingest ({key[7:]}), sustained reports/s with no loss",
                f"{i['service_rate']:,.0f}",
                f"{i['relay_rate']:,.0f}",
                f"{i['ratio']:.2f}x ({i['goal']})",
                mark(key),
            )
        )
    for key in [k for k in s if k.startswith("burst/")]:
        b = s[key]
        sv, rl = b["service"], b["relay"]
        rows.append(
            (
                f"Burst ({key[6:]}) of {sv['sent']:,.0f} to one AllReports subscriber: "
                "reports/s, lost",
                f"{sv['rate']:,.0f}, {sv['lost']:,.0f} lost",
                f"{rl['rate']:,.0f}, {rl['lost']:,.0f} lost (emitted at {rl['emitted_rate']:,.0f}/s)",
                f"{b['ratio']:.2f}x ({b['goal']})",
                _yes(b.get("met", s[key]["met"])),
            )
        )
        bb = b["batch"]
        rows.append(
            (
                f"Burst ({key[6:]}) to one batched AllReports subscriber (Batch, no window)",
                _refused(bb)
                or f"{bb['service']['rate']:,.0f}, {bb['lost']:,.0f} lost "
                f"({bb['service']['signals']:,.0f} signals)",
                f"relay {rl['rate']:,.0f}",
                "-" if "refused" in bb else f"{bb['ratio']:.2f}x ({bb['goal']})",
                "-" if "refused" in bb else _yes(bb["met"]),
            )
        )
    for key in [k for k in s if k.startswith("latency/")]:
        for rate, r in s[key].items():
            if not isinstance(r, dict):
                continue
            sv, rl = r["service"], r["relay"]
            rows.append(
                (
                    f"Latency ({key[8:]}) at {rate}/s, p50 / p99 / max ms"
                    + ("; CPU us a report" if "cpu_us_per_report" in r else ""),
                    f"{sv['p50']:.2f} / {sv['p99']:.2f} / {sv['max']:.1f}" + _cpu(r, "service"),
                    f"{rl['p50']:.2f} / {rl['p99']:.2f} / {rl['max']:.1f}" + _cpu(r, "relay"),
                    f"p99 {r['p99_ratio']:.2f}x ({s[key]['goal']})",
                    _yes(r["p99_ratio"] <= LATENCY_RATIO[key[8:]]),
                )
            )
            if "batch" in r:
                bt = r["batch"]
                judged = rate == str(LATENCY_BATCH_RATE)
                rows.append(
                    (
                        f"Latency ({key[8:]}) at {rate}/s, batched subscriber (no window), "
                        "p50 / p99 / max ms",
                        f"{bt['p50']:.2f} / {bt['p99']:.2f} / {bt['max']:.1f}, "
                        f"{bt['lost']:,.0f} lost",
                        f"{rl['p50']:.2f} / {rl['p99']:.2f} / {rl['max']:.1f}",
                        f"p99 {r['batch_p99_ratio']:.2f}x"
                        + (f" ({s[key]['goal']})" if judged else " (judged at 1000/s)"),
                        _yes(r["batch_p99_ratio"] <= LATENCY_RATIO[key[8:]]) if judged else "-",
                    )
                )
    for key in [k for k in s if k.startswith("fanout/")]:
        f = s[key]
        sv, nd = f["service"], f["no_daemon"]
        _, scene, ingest = key.split("/")
        rows.append(
            (
                f"Fan-out, {scene} scene ({ingest}), 5 clients: CPU s service+clients+bus daemon",
                f"{sv['cpu_s'] + sv['daemon_cpu_s']:.2f} ({sv['service_cpu_s']:.2f}"
                f"+{sv['clients_cpu_s']:.2f}+{sv['daemon_cpu_s']:.2f})",
                f"{nd['cpu_s'] + nd['daemon_cpu_s']:.2f} ({nd['cpu_s']:.2f}"
                f"+{nd['daemon_cpu_s']:.2f}, no-daemon)",
                f"{f['ratio']:.2f}x ({f['goal']}); without the bus daemon "
                f"{f['ratio_without_daemon']:.2f}x; with the service free {f['floor']:.2f}x; "
                f"service {f['service_us_per_report']:.1f} us/report"
                + _us_goal(f)
                + ("" if f["complete"] else "; **readings missing**"),
                _yes(f["met"]),
            )
        )
        for mode, m in f["modes"].items():
            label = MODE_LABELS[mode]
            if "refused" in m:
                rows.append(
                    (f"Fan-out, {scene} scene ({ingest}), {label}", _refused(m), "-", "-", "-")
                )
                continue
            ms = m["service"]
            rows.append(
                (
                    f"Fan-out, {scene} scene ({ingest}), 5 clients, {label}",
                    f"{ms['cpu_s'] + ms['daemon_cpu_s']:.2f} ({ms['service_cpu_s']:.2f}"
                    f"+{ms['clients_cpu_s']:.2f}+{ms['daemon_cpu_s']:.2f}), "
                    f"{sum(ms['signals']):,.0f} signals",
                    "as above",
                    f"{m['ratio']:.2f}x ({f['goal']}); with the service free {m['floor']:.2f}x; "
                    f"service {m['service_us_per_report']:.1f} us/report"
                    + _us_goal(m)
                    + ("" if m["complete"] else "; **readings missing**"),
                    _yes(m["met"]),
                )
            )
    for key in [k for k in s if k.startswith("programs/")]:
        _, scene, ingest = key.split("/")
        for kind, base, label in (
            ("bleak", "own_backend", "5 bleak programs, backend=ScannerServiceBackend"),
            ("scannerclient", "bluez_signals", "5 ScannerClient programs"),
        ):
            p, sv, bl = s[key][kind], s[key][kind]["service"], s[key][kind][base]
            rows.append(
                (
                    f"Programs, {scene} scene ({ingest}): {label}; CPU s all told",
                    f"{sv['cpu_s'] + sv['daemon_cpu_s']:.2f} ({sv['service_cpu_s']:.2f}"
                    f"+{sv['clients_cpu_s']:.2f}+{sv['daemon_cpu_s']:.2f}), "
                    f"{sum(sv['callbacks']):,.0f} callbacks",
                    f"{bl['cpu_s'] + bl['daemon_cpu_s']:.2f} ({bl['cpu_s']:.2f}"
                    f"+{bl['daemon_cpu_s']:.2f}, "
                    + ("bleak's BlueZ backend" if kind == "bleak" else "BlueZ's signals")
                    + f"), {sum(bl['callbacks']):,.0f} callbacks",
                    f"{p['ratio']:.2f}x ({s[key]['goal']}); with the service free "
                    f"{p['floor']:.2f}x" + ("" if p["complete"] else "; **readings missing**"),
                    _yes(p["met"]),
                )
            )
    if "memory" in s:
        m = s["memory"]
        for size, per in m["bytes_per_device"].items():
            rows.append(
                (
                    f"Memory at {int(size):,} devices: RSS MB, bytes/device",
                    f"{m['rss_mb'][size]:.1f} MB, {per:,.0f} B",
                    "-",
                    m["goal"],
                    mark("memory"),
                )
            )
    if "snapshot" in s:
        n = s["snapshot"]
        ref = n["bluez_get_managed_objects_ms"]
        rows.append(
            (
                f"GetDiscoveredDevices, {n['devices']:,.0f} devices: p50 / p99 ms",
                f"{n['p50_ms']:.1f} / {n['p99_ms']:.1f}",
                f"{ref['p50']:.1f} / {ref['p99']:.1f} (GetManagedObjects, "
                f"{n['bluez_devices']:,.0f} devices)",
                f"p50 {n['ratio']:.2f}x ({n['goal']})",
                mark("snapshot"),
            )
        )
    if "startup" in s:
        u = s["startup"]
        rows.append(
            (
                "Start-up: name owned / discovery started, s",
                f"{u['service']['name_owned_s']:.2f} / {u['service']['discovering_s']:.2f}",
                f"{u['relay']['name_owned_s']:.2f} / {u['relay']['discovering_s']:.2f}",
                u["goal"],
                mark("startup"),
            )
        )
    for rate in s["loadcap"]["rates"] if "loadcap" in s else ():
        c = s["loadcap"]
        on, off = c["rates"][rate]["capped"], c["rates"][rate]["unbounded"]
        rows.append(
            (
                f"Load cap at {on['offered_rate']:,.0f} reports/s: service CPU % of a core "
                f"(step), specific devices got",
                f"{on['cpu_percent']:.0f} % (step {on['step']:.0f}; dbus-daemon "
                f"{on['daemon_cpu_percent']:.0f} %), "
                f"{on['specific_devices']:.0f}/{c['wanted_devices']}",
                f"{off['cpu_percent']:.0f} % (budget off; dbus-daemon "
                f"{off['daemon_cpu_percent']:.0f} %), "
                f"{off['specific_devices']:.0f}/{c['wanted_devices']}",
                f"{c['rates'][rate]['ratio']:.2f}x (goal <= {c['cap_percent']} % "
                f"x {LOADCAP_TOLERANCE})",
                mark("loadcap"),
            )
        )
    if "feed" in s:
        d = s["feed"]
        rows.append(
            (
                "Feed to dbus-ble-sensors in the fan-out scene: service CPU s, datagrams "
                "received / sent",
                f"{d['on']['service_cpu_s']:.2f}, {d['on']['received']:,.0f} / "
                f"{d['on']['fed']:,.0f} ({d['rate']:,.0f}/s)",
                f"{d['off']['service_cpu_s']:.2f} (feed off)",
                f"{d['cpu_ratio']:.2f}x, lost {d['lost']:.0f} (goal <= {FEED_CPU_RATIO}x, none)",
                mark("feed"),
            )
        )
    header = ("scenario", "service", "baseline (relay / no-daemon)", "ratio / goal", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    meta = result["meta"]
    lines.append("")
    lines.append(
        f"{meta['mode']} run, median of {meta['repeats']}, {meta['date']}, commit {meta['commit']}, "
        f"ingests {' / '.join(meta['ingests'])} (the others on {meta['primary_ingest']}), "
        f"Python {meta['python']}, dbus-fast {meta['dbus_fast']}, {meta['machine']}, "
        f"load {meta['loadavg_before'][0]:.2f} before / {meta['loadavg_after'][0]:.2f} after"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="each scenario once, small and short")
    parser.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    parser.add_argument("--repeat", type=int, help="runs per figure (median); default 3, smoke 1")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--ingest",
        action="append",
        choices=INGESTS,
        help="the service's ingest(s) to measure (repeatable; default both, the first also "
        "for memory, snapshot, start-up, load cap and feed)",
    )
    parser.add_argument(
        "--scene",
        action="append",
        choices=SCENES,
        help="the fan-out scene(s) of fanout and programs (repeatable; default both)",
    )
    parser.add_argument(
        "--service-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every service the bench starts, for ablations "
        "(e.g. --service-arg=--broadcast-interval=60)",
    )
    parser.add_argument(
        "--no-harden",
        action="store_true",
        help="run the service and the relay with dbus-fast's stock writer, which dies on EAGAIN",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the service and the relay (see the logs)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="CMD",
        default="",
        help="sample the service with this py-spy during fan-out (folded stacks in the logs)",
    )
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.repeat:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeat})
    only = args.only or list(SCENARIOS)

    t0 = time.monotonic()

    def progress(text: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s {text}", file=sys.stderr, flush=True)

    result = asyncio.run(
        run_all(
            plan,
            only,
            progress,
            not args.no_harden,
            args.profile,
            args.py_spy,
            tuple(dict.fromkeys(args.ingest or INGESTS)),
            tuple(dict.fromkeys(args.scene or SCENES)),
            args.service_arg,
        )
    )
    if plan is not SMOKE and args.smoke:
        result["meta"]["mode"] = "smoke"
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
