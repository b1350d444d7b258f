"""A benchmark client process: listens to the service, the relay or BlueZ itself.

Modes (``listen``):

- ``broadcast``: the service's broadcast ``DeviceDiscovered``;
- ``subscribe``: a ``Subscribe(filter)`` of its own (unicast signals), one
  ``DeviceDiscovered`` per report or, with ``Batch`` in the filter's options,
  ``DevicesDiscovered`` items (with ``ChangedKeysOnly``, only what changed);
- ``relay``: the bare relay's forwarded ``PropertiesChanged``;
- ``bluez``: the no-daemon design: BlueZ's own signals and a discovery session
  of its own, following Device1 objects and filtering itself with the
  service's own record and filter code (the cheapest client one can write
  with dbus-fast).

Reports that carry a bench stamp (``common.stamp``) give latency and loss.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.const import (
    BLUEZ_ADAPTER,
    BLUEZ_DEVICE,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    OBJECT_MANAGER,
    PROPERTIES,
    SCANNER_INTERFACE,
    SCANNER_PATH,
    SCANNER_SERVICE,
)
from ble_scanner.core.filters import SUBSCRIPTION_KEYS, Filter, parse_subscription
from ble_scanner.core.record import DeviceView, MalformedData, adapter_name, unwrap_device
from tests.bench.common import (
    ADAPTER_PATH,
    BENCH_COMPANY,
    RELAY_NAME,
    commands,
    percentiles,
    reply,
    unstamp,
)

# Subscribe's batching options (issue 22), typed here so that the bench can ask
# a service that does not know them yet, and be told InvalidArgs.
BATCH_KEYS: Final = {"Batch": "b", "BatchWindow": "d", "ChangedKeysOnly": "b"}


def variants(spec: dict[str, Any]) -> dict[str, Variant]:
    """A filter written as plain JSON values → the ``a{sv}`` the service takes."""
    return {
        key: Variant(BATCH_KEYS.get(key) or SUBSCRIPTION_KEYS[key], value)
        for key, value in spec.items()
    }


class Client:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.run = -1
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.first = self.last = 0.0  # arrival of the run's first and last stamped report
        self.signals = 0  # every signal handled
        self.callbacks = 0  # signals that reached the application (after filtering)
        self.addresses: set[str] = set()  # devices heard of in this run
        # (address, payload) of the fan-out scene's readings heard in this run:
        # each run's readings are new (simproc.scene), so this counts what arrived.
        self.readings: set[tuple[str, bytes]] = set()
        # bluez mode
        self.views: dict[str, DeviceView] = {}
        self.filter: Filter | None = None
        # watch mode
        self.name_owned: float | None = None
        self.discovering: float | None = None
        self.watched_name = ""

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> Message:
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        reply_ = await asyncio.wait_for(self.bus.call(msg), 30)
        assert reply_ is not None
        if reply_.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply_.error_name} {reply_.body}")
        return reply_

    async def add_match(self, rule: str) -> None:
        await self.call(DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule])

    def stamped(self, payload: bytes) -> None:
        now = time.monotonic()
        run, seq, t = unstamp(payload)
        if run == self.run:
            self.latencies.append(now - t)
            self.seen.add(seq)
            self.first = self.first or now
            self.last = now

    # --- modes ---------------------------------------------------------------------

    async def listen(self, mode: str, filter: dict[str, Any] | None = None) -> None:
        if mode == "broadcast":
            self.bus.add_message_handler(self.on_scanner_signal)
            await self.add_match(
                f"type='signal',sender='{SCANNER_SERVICE}',interface='{SCANNER_INTERFACE}',"
                f"member='DeviceDiscovered',path='{SCANNER_PATH}'"
            )
        elif mode == "subscribe":
            self.bus.add_message_handler(self.on_scanner_signal)
            await self.call(
                SCANNER_SERVICE,
                SCANNER_PATH,
                SCANNER_INTERFACE,
                "Subscribe",
                "a{sv}",
                [variants(filter or {})],
            )
        elif mode == "relay":
            self.bus.add_message_handler(self.on_relay_signal)
            await self.add_match(
                f"type='signal',sender='{RELAY_NAME}',interface='{PROPERTIES}',"
                "member='PropertiesChanged'"
            )
        elif mode == "bluez":
            self.filter, _ = parse_subscription(variants(filter or {}))
            self.bus.add_message_handler(self.on_bluez_signal)
            await self.add_match(
                f"type='signal',sender='{BLUEZ_SERVICE}',interface='{OBJECT_MANAGER}',path='/'"
            )
            await self.add_match(
                f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES}',"
                f"member='PropertiesChanged',path_namespace='{BLUEZ_ROOT_PATH}'"
            )
            objects = await self.call(BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects")
            for path, interfaces in objects.body[0].items():
                self.device_props(path, interfaces.get(BLUEZ_DEVICE))
            where = (BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_ADAPTER)
            flt = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}
            await self.call(*where, "SetDiscoveryFilter", "a{sv}", [flt])
            await self.call(*where, "StartDiscovery")
        else:
            raise ValueError(mode)

    def on_scanner_signal(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL:
            return False
        if msg.member == "DeviceDiscovered":
            self.signals += 1
            self.item(msg.body[0], msg.body[1])
        elif msg.member == "DevicesDiscovered":
            self.signals += 1
            for address, record in msg.body[0]:
                self.item(address, record)
        return False

    def item(self, address: str, record: dict[str, Variant]) -> None:
        """One report: a full record, or (``ChangedKeysOnly``) the keys that changed."""
        self.callbacks += 1
        self.addresses.add(address)
        mfr = record.get("ManufacturerData")
        if mfr is not None and mfr.value:
            payload = mfr.value.get(BENCH_COMPANY)
            if payload is not None:
                self.stamped(payload)
            else:
                self.readings.add((address, next(iter(mfr.value.values()))))
            return
        data = record.get("ServiceData")
        if data is not None and data.value:
            self.readings.add((address, next(iter(data.value.values()))))

    async def try_subscribe(self, filter: dict[str, Any]) -> str:
        """Subscribe; the D-Bus error name if the service refuses, else ""."""
        msg = Message(
            destination=SCANNER_SERVICE,
            path=SCANNER_PATH,
            interface=SCANNER_INTERFACE,
            member="Subscribe",
            signature="a{sv}",
            body=[variants(filter)],
        )
        answer = await asyncio.wait_for(self.bus.call(msg), 30)
        assert answer is not None
        if answer.message_type is MessageType.ERROR:
            return answer.error_name or "error"
        return ""

    def on_relay_signal(self, msg: Message) -> bool:
        if msg.member != "PropertiesChanged" or msg.sender == DBUS_SERVICE:
            return False
        self.signals += 1
        self.callbacks += 1
        mfr = msg.body[1].get("ManufacturerData")
        if mfr is not None:
            payload = mfr.value.get(BENCH_COMPANY)
            if payload is not None:
                self.stamped(payload.value)
        return False

    def on_bluez_signal(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL or msg.sender == DBUS_SERVICE:
            return False
        self.signals += 1
        if msg.member == "PropertiesChanged":
            interface, changed, invalidated = msg.body
            if interface != BLUEZ_DEVICE:
                return False
            view = self.views.get(msg.path)
            if view is None:
                return False
            try:
                is_report = view.update(unwrap_device(changed), invalidated)
            except MalformedData:
                return False
            if is_report:
                self.report(view)
        elif msg.member == "InterfacesAdded":
            path, interfaces = msg.body
            view = self.device_props(path, interfaces.get(BLUEZ_DEVICE))
            if view is not None:
                self.report(view)
        return False

    def device_props(self, path: str, props: dict[str, Variant] | None) -> DeviceView | None:
        if props is None:
            return None
        view = self.views.get(path) or DeviceView(path, adapter_name(path))
        try:
            view.update(unwrap_device(props))
        except MalformedData:
            return None
        self.views[path] = view
        return view

    def report(self, view: DeviceView) -> None:
        assert self.filter is not None
        if self.filter.is_everything or self.filter.matches(view):  # type: ignore[arg-type]
            self.callbacks += 1
            content = view.content
            payload = content.manufacturer_data.get(BENCH_COMPANY)
            if payload is not None:
                self.stamped(payload)
            else:
                data = content.manufacturer_data or content.service_data
                if data:
                    self.readings.add((view.address, next(iter(data.values()))))

    # --- watching a service start ----------------------------------------------------

    def on_watch_signal(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL:
            return False
        now = time.monotonic()
        if msg.member == "NameOwnerChanged" and msg.body[0] == self.watched_name:
            if msg.body[2] and self.name_owned is None:
                self.name_owned = now
        elif msg.member == "PropertiesChanged" and msg.body[0] == BLUEZ_ADAPTER:
            discovering = msg.body[1].get("Discovering")
            if discovering is not None and discovering.value and self.discovering is None:
                self.discovering = now
        return False

    async def watch(self, name: str) -> None:
        self.watched_name = name
        self.bus.add_message_handler(self.on_watch_signal)
        await self.add_match(
            f"type='signal',sender='{DBUS_SERVICE}',member='NameOwnerChanged',arg0='{name}'"
        )
        await self.add_match(
            f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES}',path='{ADAPTER_PATH}'"
        )

    # --- calls -------------------------------------------------------------------------

    async def snapshot(self, count: int) -> dict[str, Any]:
        times: list[float] = []
        devices = 0
        for _ in range(count):
            t0 = time.perf_counter()
            result = await self.call(
                SCANNER_SERVICE,
                SCANNER_PATH,
                SCANNER_INTERFACE,
                "GetDiscoveredDevices",
                "a{sv}",
                [{}],
            )
            times.append(time.perf_counter() - t0)
            devices = len(result.body[0])
        return {"devices": devices, **{k: v for k, v in percentiles(times).items()}}

    async def managed_objects(self, count: int) -> dict[str, Any]:
        times: list[float] = []
        devices = 0
        for _ in range(count):
            t0 = time.perf_counter()
            result = await self.call(BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects")
            times.append(time.perf_counter() - t0)
            devices = sum(BLUEZ_DEVICE in interfaces for interfaces in result.body[0].values())
        return {"devices": devices, **percentiles(times)}

    async def status(self) -> dict[str, Any]:
        result = await self.call(SCANNER_SERVICE, SCANNER_PATH, SCANNER_INTERFACE, "GetStatus")
        return {k: v.value for k, v in result.body[0].items() if k != "Adapters"}

    async def ingest(self) -> dict[str, str]:
        """Each adapter's ingest as GetStatus reports it ("mgmt" or "dbus")."""
        result = await self.call(SCANNER_SERVICE, SCANNER_PATH, SCANNER_INTERFACE, "GetStatus")
        adapters = result.body[0]["Adapters"].value
        return {name: fields["Ingest"].value for name, fields in adapters.items()}


async def main() -> None:
    bus = await MessageBus(
        bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"], bus_type=BusType.SYSTEM
    ).connect()
    client = Client(bus)
    reply(ready=True, pid=os.getpid())
    async for cmd in commands():
        name = cmd.pop("cmd")
        try:
            if name == "quit":
                break
            if name == "listen":
                await client.listen(**cmd)
                reply(ok=True)
            elif name == "reset":
                client.run = cmd["run"]
                client.latencies = []
                client.seen = set()
                client.signals = client.callbacks = 0
                client.first = client.last = 0.0
                client.addresses = set()
                client.readings = set()
                reply(ok=True)
            elif name == "count":
                reply(received=len(client.seen), signals=client.signals)
            elif name == "stats":
                reply(
                    received=len(client.seen),
                    signals=client.signals,
                    callbacks=client.callbacks,
                    devices=sorted(client.addresses),
                    readings=len(client.readings),
                    latency=percentiles(client.latencies),
                    first=client.first,
                    last=client.last,
                )
            elif name == "watch":
                await client.watch(cmd["name"])
                reply(ok=True)
            elif name == "watch_reset":
                client.name_owned = client.discovering = None
                reply(ok=True)
            elif name == "watch_result":
                reply(name_owned=client.name_owned, discovering=client.discovering)
            elif name == "snapshot":
                reply(**await client.snapshot(cmd["count"]))
            elif name == "managed_objects":
                reply(**await client.managed_objects(cmd["count"]))
            elif name == "try_subscribe":
                reply(refused=await client.try_subscribe(cmd["filter"]))
            elif name == "status":
                reply(**await client.status())
            elif name == "ingest":
                reply(adapters=await client.ingest())
            else:
                reply(error=f"unknown command {name}")
        except Exception as exc:  # reported to the orchestrator, which fails the scenario
            reply(error=f"{type(exc).__name__}: {exc}")
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
