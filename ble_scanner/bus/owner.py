"""The bus daemon's NameOwnerChanged, read one way: a name's new owner, a connection gone.

Every piece that follows a peer (the service its clients, the BlueZ side
bluetoothd, the Venus side localsettings, the client the service, the
simulator its discovery clients) reads the same signal; this is where its
sender and signature are checked (dbus-specification, "Message Bus
Messages": ``NameOwnerChanged(s name, s old_owner, s new_owner)``);
``calls.name_owner_rule`` is the match rule for it.
"""

from __future__ import annotations

from typing import Final

from dbus_fast import Message

from ..const import DBUS_SERVICE

NAME_OWNER_CHANGED: Final = "NameOwnerChanged"


def owner_change(msg: Message) -> tuple[str, str] | None:
    """``(name, new_owner)`` if ``msg`` is the bus daemon's NameOwnerChanged, else None.

    ``new_owner`` is ``""`` when the name has no owner any more.
    """
    if msg.member != NAME_OWNER_CHANGED or msg.sender != DBUS_SERVICE or msg.signature != "sss":
        return None
    name, _old_owner, new_owner = msg.body
    return name, new_owner


def connection_left(msg: Message) -> str | None:
    """The unique name of a connection that left the bus, if ``msg`` says one did."""
    change = owner_change(msg)
    if change is None:
        return None
    name, new_owner = change
    return name if not new_owner and name.startswith(":") else None
