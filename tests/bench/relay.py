"""The baseline: a bare dbus-fast relay that forwards each BlueZ signal as one signal.

No logic at all: it holds a discovery session like the service (DuplicateData,
so BlueZ reports every advertisement), and every signal from org.bluez that
its match rules let in goes out again, unchanged, as a broadcast from its own
connection. Clients match on its unique name, so data crosses the same two
daemon hops as through the service.
"""

from __future__ import annotations

import asyncio
import os
import signal

from dbus_fast import BusType, Message, MessageType, NameFlag, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.const import (
    BLUEZ_ADAPTER,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    OBJECT_MANAGER,
    PROPERTIES,
)
from tests.bench.common import ADAPTER_PATH, RELAY_NAME


def _call(member: str, signature: str, body: list[object], **where: str) -> Message:
    return Message(member=member, signature=signature, body=body, **where)


async def main() -> None:
    bus = await MessageBus(
        bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"], bus_type=BusType.SYSTEM
    ).connect()
    send = bus.send
    new_signal = Message.new_signal

    def forward(msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL and msg.sender != DBUS_SERVICE:
            send(new_signal(msg.path, msg.interface, msg.member, msg.signature, msg.body))
        return False

    bus.add_message_handler(forward)
    for rule in (
        f"type='signal',sender='{BLUEZ_SERVICE}',interface='{OBJECT_MANAGER}',path='/'",
        f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES}',"
        f"member='PropertiesChanged',path_namespace='{BLUEZ_ROOT_PATH}'",
    ):
        await bus.call(
            _call(
                "AddMatch",
                "s",
                [rule],
                destination=DBUS_SERVICE,
                path=DBUS_PATH,
                interface=DBUS_INTERFACE,
            )
        )
    await bus.request_name(RELAY_NAME, NameFlag.DO_NOT_QUEUE)
    where = {"destination": BLUEZ_SERVICE, "path": ADAPTER_PATH, "interface": BLUEZ_ADAPTER}
    filt = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}
    await bus.call(_call("SetDiscoveryFilter", "a{sv}", [filt], **where))
    await bus.call(_call("StartDiscovery", "", [], **where))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
