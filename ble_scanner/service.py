"""``com.victronenergy.ble.Scanner1`` on the bus: methods, signals, subscriptions.

Served through one low-level message handler rather than a ServiceInterface,
because a subscription belongs to the caller's connection and only the raw
message carries ``sender``. The interface is declared once, in
``INTROSPECTION``, which is what busctl, gdbus and dbus-spy read.

Who may call what (docs/dbus-api.md "Who may do what") is checked here too,
because the bus of Venus OS enforces no policy: a call that needs the caller's
credentials waits for them (bus/credentials.py), then is dispatched again.
"""

from __future__ import annotations

import enum
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Final

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from .bus.calls import add_match, name_owner_rule
from .bus.credentials import CredentialCache, steer_group
from .bus.marshal import MESSAGE_METHOD_RETURN, header_fields, snapshot_body
from .bus.owner import connection_left
from .bus.records import record_entry
from .const import (
    DBUS_DAEMON_CALL_TIMEOUT,
    DEFAULT_STEER_GROUP,
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_ARGS,
    ERROR_LIMITS_EXCEEDED,
    ERROR_UNKNOWN_METHOD,
    INTROSPECTABLE,
    SCANNER_ERROR_NOT_OWNER,
    SCANNER_ERROR_UNKNOWN_LEASE,
    SCANNER_ERROR_UNKNOWN_SUBSCRIPTION,
    SCANNER_INTERFACE,
    SCANNER_PATH,
    SUBSCRIPTION_PATH_PREFIX,
)
from .core.access import AccessDenied, Credentials, check_root, check_steer
from .core.cache import Device
from .core.filters import FilterTooLarge, InvalidFilter, parse_snapshot_query, parse_subscription
from .core.hub import Hub
from .core.leases import (
    LeaseError,
    LeaseKind,
    LeaseRegistry,
    NotLeaseOwner,
    TooManyLeases,
    UnknownLease,
)
from .core.loadcap import SheddingLoad
from .core.state import ServiceStatus
from .core.subscriptions import NotOwner, TooManySubscriptions, UnknownSubscription
from .signals import ScannerSignals
from .tasks import TaskSet
from .venus.const import BUSITEM_INTERFACE

_LOGGER = logging.getLogger(__name__)

INTROSPECTION: Final = f"""<interface name="{SCANNER_INTERFACE}">
  <method name="GetDiscoveredDevices">
    <arg name="filter" type="a{{sv}}" direction="in"/>
    <arg name="devices" type="a{{sa{{sv}}}}" direction="out"/>
  </method>
  <method name="Subscribe">
    <arg name="filter" type="a{{sv}}" direction="in"/>
    <arg name="subscription" type="o" direction="out"/>
  </method>
  <method name="Unsubscribe">
    <arg name="subscription" type="o" direction="in"/>
  </method>
  <method name="RequestActiveScan">
    <arg name="adapter" type="s" direction="in"/>
    <arg name="seconds" type="d" direction="in"/>
    <arg name="lease" type="o" direction="out"/>
  </method>
  <method name="PauseScan">
    <arg name="adapter" type="s" direction="in"/>
    <arg name="seconds" type="d" direction="in"/>
    <arg name="lease" type="o" direction="out"/>
  </method>
  <method name="ReleaseLease">
    <arg name="lease" type="o" direction="in"/>
  </method>
  <method name="GetStatus">
    <arg name="status" type="a{{sv}}" direction="out"/>
  </method>
  <signal name="DeviceDiscovered">
    <arg name="address" type="s"/>
    <arg name="advertisement" type="a{{sv}}"/>
  </signal>
  <signal name="DevicesDiscovered">
    <arg name="devices" type="a(sa{{sv}})"/>
  </signal>
  <signal name="DeviceLost">
    <arg name="address" type="s"/>
  </signal>
</interface>"""

_SIGNATURES: Final = {
    "GetDiscoveredDevices": "a{sv}",
    "Subscribe": "a{sv}",
    "Unsubscribe": "o",
    "RequestActiveScan": "sd",
    "PauseScan": "sd",
    "ReleaseLease": "o",
    "GetStatus": "",
}
# What the service refuses a call with, as the D-Bus error a client matches on.
# Only these are caught: any other exception is a bug, and dbus-fast answers it
# with its internal error (and logs the traceback) rather than passing it off
# as a refusal.
_ERROR_NAMES: Final[dict[type[Exception], str]] = {
    AccessDenied: ERROR_ACCESS_DENIED,
    LeaseError: ERROR_INVALID_ARGS,
    InvalidFilter: ERROR_INVALID_ARGS,
    TooManyLeases: ERROR_LIMITS_EXCEEDED,
    FilterTooLarge: ERROR_LIMITS_EXCEEDED,
    TooManySubscriptions: ERROR_LIMITS_EXCEEDED,
    SheddingLoad: ERROR_LIMITS_EXCEEDED,
    NotLeaseOwner: SCANNER_ERROR_NOT_OWNER,
    NotOwner: SCANNER_ERROR_NOT_OWNER,
    UnknownLease: SCANNER_ERROR_UNKNOWN_LEASE,
    UnknownSubscription: SCANNER_ERROR_UNKNOWN_SUBSCRIPTION,
}
_REFUSALS: Final = tuple(_ERROR_NAMES)
# Scanner1 calls that need to know who calls: steering the radio (root and the
# steer group only) and what is counted per user (docs/dbus-api.md "Who may do what").
_STEER: Final = frozenset(("RequestActiveScan", "PauseScan"))
_NEEDS_CALLER: Final = _STEER | {"Subscribe"}
# Calls of one connection held while the bus daemon says who it is (one round
# trip); a connection that sends more before the answer is flooding.
MAX_HELD_CALLS: Final = 64
# Standard errors name the method in their text; ours say it all themselves.
_NAMES_THE_METHOD: Final = frozenset((ERROR_INVALID_ARGS, ERROR_LIMITS_EXCEEDED))
_STANDARD_INTERFACES: Final = """<interface name="org.freedesktop.DBus.Introspectable">
  <method name="Introspect"><arg name="data" type="s" direction="out"/></method>
</interface>
<interface name="org.freedesktop.DBus.Peer">
  <method name="Ping"/>
  <method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method>
</interface>"""


def record_variants(device: Device) -> dict[str, Variant]:
    """A cached device's record (docs/dbus-api.md "Scanner1"), as dbus-fast values.

    The service sends records through ``bus/records.py`` ``record_entry``, which encodes
    this same dict (tests/unit/test_marshal.py holds the two equal).
    """
    content = device.content
    assert content is not None
    record: dict[str, Variant] = {
        "ManufacturerData": Variant("a{qay}", dict(content.manufacturer_data)),
        "ServiceData": Variant("a{say}", dict(content.service_data)),
        "ServiceUuids": Variant("as", list(content.service_uuids)),
    }
    if content.name is not None:
        record["Name"] = Variant("s", content.name)
    if content.tx_power is not None:
        record["TxPower"] = Variant("n", content.tx_power)
    record["Address"] = Variant("s", device.address)
    record["AddressType"] = Variant("s", device.address_type)
    record["Adapter"] = Variant("s", device.adapter)
    record["Path"] = Variant("o", device.path)
    record["FirstSeen"] = Variant("d", device.first_seen)
    if device.restored:
        record["Restored"] = Variant("b", True)
    record["LastSeen"] = Variant("d", device.last_seen)
    if device.interval is not None:
        record["Interval"] = Variant("d", device.interval)
    if len(device.sources) > 1:
        heard_by = device.heard_by()
        if len(heard_by) > 1:
            record["Sources"] = Variant("a{sn}", heard_by)
    if device.rssi is not None:
        record["Rssi"] = Variant("n", device.rssi)
    return record


def status_variants(status: ServiceStatus) -> dict[str, Variant]:
    adapters = {
        a.name: {
            "Address": Variant("s", a.address),
            "Powered": Variant("b", a.powered),
            "Discovering": Variant("b", a.discovering),
            "Session": Variant("b", a.session),
            "State": Variant("s", a.state),
            "Ingest": Variant("s", a.ingest),
            "Listening": Variant("b", a.listening),
        }
        for a in status.adapters
    }
    return {
        "Version": Variant("s", status.version),
        "BluezPresent": Variant("b", status.bluez_present),
        "Scanning": Variant("b", status.scanning),
        "Adapters": Variant("a{sa{sv}}", adapters),
        "Devices": Variant("u", status.devices),
        "Subscriptions": Variant("u", status.subscriptions),
        "Reports": Variant("t", status.reports),
        "Ignored": Variant("t", status.ignored),
        "Malformed": Variant("t", status.malformed),
        "LostTimeout": Variant("d", status.lost_timeout),
        "Shed": Variant("t", status.shed),
        "SubscriptionsShed": Variant("a{ot}", dict(status.subscriptions_shed)),
        "LoadShedding": Variant("u", status.load_shedding),
        "Leases": Variant("u", status.leases),
        "Users": Variant("u", status.users),
    }


class _Caller(enum.Enum):
    UNKNOWN = enum.auto()  # the bus daemon has not said yet who sent the call


# Who sent a call, as far as it matters (``ScannerService._caller``): their
# credentials, not known yet, or None for a call anyone may make.
Caller = Credentials | _Caller | None


def _refusal(msg: Message, member: str, exc: Exception) -> Message:
    """The error reply for a refused call (an exception of ``_ERROR_NAMES``)."""
    name = next(_ERROR_NAMES[cls] for cls in type(exc).__mro__ if cls in _ERROR_NAMES)
    text = f"{member}: {exc}" if name in _NAMES_THE_METHOD else str(exc)
    return Message.new_error(msg, name, text)


class ScannerService:
    """Answers Scanner1 calls; the hub's emissions go out through ``signals`` (signals.py)."""

    def __init__(
        self,
        bus: MessageBus,
        hub: Hub,
        signals: ScannerSignals,
        status: Callable[[], ServiceStatus],
        leases: LeaseRegistry,
        on_leases_changed: Callable[[], None],
        steer: str = DEFAULT_STEER_GROUP,
    ) -> None:
        """``on_leases_changed``: told whenever a lease starts or ends (the hub's
        timer, which has the BlueZ side converge and wakes for the next expiry);
        ``steer``: the SteerGroup setting."""
        self.bus = bus
        self.hub = hub
        self.signals = signals
        self.status = status
        self.leases = leases
        self.on_leases_changed = on_leases_changed
        self.credentials = CredentialCache(bus)
        self.steer_group = steer_group(steer)
        # Calls waiting for their sender's credentials, and the lookups asking for them.
        self._held: dict[str, list[Message]] = {}
        self._lookups = TaskSet(_LOGGER, "learning who a caller is")
        # Connections refused something already: refusals are logged once per connection.
        self._refused: set[str] = set()

    async def start(self) -> None:
        """Serve the interface and follow subscription owners leaving the bus."""
        self.bus.add_message_handler(self._on_message)
        await add_match(self.bus, name_owner_rule(), timeout=DBUS_DAEMON_CALL_TIMEOUT)

    def close(self) -> None:
        self.bus.remove_message_handler(self._on_message)
        self._lookups.cancel()

    def set_steer_group(self, text: str) -> None:
        """The SteerGroup setting (a group name or a gid), applied to the next call."""
        if text != self.steer_group.name:
            self.steer_group = steer_group(text)

    # --- incoming ------------------------------------------------------------------

    def _on_message(self, msg: Message) -> Message | bool:
        mtype = msg.message_type
        if mtype == MessageType.SIGNAL:
            left = connection_left(msg)
            if left is not None:
                self._owner_left(left)
            return False
        if mtype != MessageType.METHOD_CALL:
            return False
        caller = self._caller(msg)
        if caller is _Caller.UNKNOWN:
            return self._hold(msg)
        if msg.interface == BUSITEM_INTERFACE:
            return self._busitem_call(msg, caller)
        # Whatever we emitted before this call goes out before its reply.
        self.signals.outbox.flush()
        if msg.interface == SCANNER_INTERFACE:
            if msg.path != SCANNER_PATH:
                return Message.new_error(
                    msg, ERROR_UNKNOWN_METHOD, f"{SCANNER_INTERFACE} is served on / only"
                )
            return self._call(msg, caller)
        path = msg.path or ""
        if (
            msg.interface == INTROSPECTABLE
            and msg.member == "Introspect"
            and (path == SCANNER_PATH or path.startswith(SUBSCRIPTION_PATH_PREFIX[:-1]))
        ):
            return Message.new_method_return(msg, "s", [self._introspect(path)])
        return False

    # --- who calls ------------------------------------------------------------------

    def _caller(self, msg: Message) -> Caller:
        """The sender's credentials if this call needs them (UNKNOWN until the bus
        daemon has said), else None."""
        if msg.interface == SCANNER_INTERFACE:
            needed = msg.member in _NEEDS_CALLER
        else:
            needed = msg.interface == BUSITEM_INTERFACE and msg.member == "SetValue"
        if not needed:
            return None
        known = self.credentials.get(msg.sender or "")
        return _Caller.UNKNOWN if known is None else known

    def _hold(self, msg: Message) -> Message | bool:
        """Keep the call until the bus daemon says who sent it; only this caller waits."""
        sender = msg.sender or ""
        held = self._held.get(sender)
        if held is None:
            self._held[sender] = [msg]
            self._lookups.spawn(self._learn(sender), name=f"credentials of {sender}")
            return True
        if len(held) >= MAX_HELD_CALLS:
            return Message.new_error(
                msg,
                ERROR_LIMITS_EXCEEDED,
                f"{msg.member}: more than {MAX_HELD_CALLS} calls before the first was answered",
            )
        held.append(msg)
        return True

    async def _learn(self, sender: str) -> None:
        credentials = await self.credentials.lookup(sender)
        for msg in self._held.pop(sender, []):
            if credentials is None:
                self.bus.send(
                    Message.new_error(
                        msg, ERROR_ACCESS_DENIED, f"{msg.member}: cannot learn who is calling"
                    )
                )
            else:
                # Dispatched again, as if it arrived now: this handler, with the caller
                # known, then dbus-fast's exported interfaces (the BusItem tree).
                self.bus._process_message(msg)

    def _log_refusal(self, msg: Message, caller: Credentials, exc: AccessDenied) -> None:
        """Once per connection: a client retrying in a loop must not fill the log."""
        sender = msg.sender or ""
        if sender not in self._refused:
            self._refused.add(sender)
            _LOGGER.warning("%s (uid %d) refused: %s", sender, caller.uid, exc)

    def _busitem_call(self, msg: Message, caller: Caller) -> Message | bool:
        """SetValue on our own tree is for root (the settings are localsettings' to
        change); everything else goes on to the tree (venus/busitem.py)."""
        if isinstance(caller, Credentials):
            try:
                check_root("SetValue", caller)
            except AccessDenied as exc:
                self._log_refusal(msg, caller, exc)
                return _refusal(msg, "SetValue", exc)
        return False

    # --- Scanner1 ---------------------------------------------------------------------

    def _call(self, msg: Message, caller: Caller) -> Message | bool:
        member = msg.member or ""
        expected = _SIGNATURES.get(member)
        if expected is None:
            return Message.new_error(
                msg, ERROR_UNKNOWN_METHOD, f"{SCANNER_INTERFACE} has no method {member[:64]}"
            )
        if msg.signature != expected:
            return Message.new_error(
                msg,
                ERROR_INVALID_ARGS,
                f"{member} takes '{expected}', not '{msg.signature[:64]}'",
            )
        hub = self.hub
        try:
            if member == "GetDiscoveredDevices":
                query = parse_snapshot_query(msg.body[0])
                body = snapshot_body(record_entry(d) for d in hub.snapshot(query))
                if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                    fields = header_fields(
                        "a{sa{sv}}", reply_serial=msg.serial, destination=msg.sender
                    )
                    outbox = self.signals.outbox
                    outbox.send(MESSAGE_METHOD_RETURN, fields, body)
                    outbox.flush()
                return True
            if member == "Subscribe":
                assert isinstance(caller, Credentials)  # _NEEDS_CALLER: held until known
                return self._subscribe(msg, hub, caller.uid)
            if member == "Unsubscribe":
                # What it gathered was the client's before it asked to stop: sent first.
                self.signals.ended(hub.unsubscribe(msg.body[0], msg.sender), send=True)
                return Message.new_method_return(msg)
            if member in _STEER:
                assert isinstance(caller, Credentials)
                return self._lease(msg, member, caller)
            if member == "ReleaseLease":
                self.leases.release(msg.body[0], msg.sender or "")
                self.on_leases_changed()
                return Message.new_method_return(msg)
            return Message.new_method_return(msg, "a{sv}", [status_variants(self.status())])
        except _REFUSALS as exc:
            if isinstance(exc, AccessDenied) and isinstance(caller, Credentials):
                self._log_refusal(msg, caller, exc)
            return _refusal(msg, member, exc)

    def _lease(self, msg: Message, member: str, caller: Credentials) -> Message:
        check_steer(member, caller, self.steer_group)
        kind = LeaseKind.ACTIVE if member == "RequestActiveScan" else LeaseKind.PAUSE
        lease = self.leases.request(msg.sender or "", kind, msg.body[0], msg.body[1], caller.uid)
        _LOGGER.info(
            "%s (uid %d): %s lease %s on %s for %g s",
            msg.sender,
            caller.uid,
            kind.value,
            lease.path,
            lease.adapter or "every adapter",
            msg.body[1],
        )
        self.on_leases_changed()
        return Message.new_method_return(msg, "o", [lease.path])

    def _subscribe(self, msg: Message, hub: Hub, uid: int) -> bool:
        flt, options = parse_subscription(msg.body[0])
        subscription, replay = hub.subscribe(msg.sender, flt, options, uid)
        _LOGGER.debug("%s (uid %d) subscribed as %s", msg.sender, uid, subscription.path)
        # The reply goes out first, so the client knows the path before the
        # replayed signals from it arrive (both travel in order on our socket).
        self.bus.send(Message.new_method_return(msg, "o", [subscription.path]))
        if replay:
            self.signals.replay(replay, subscription)
        return True

    def _owner_left(self, owner: str) -> None:
        self.credentials.forget(owner)
        self._held.pop(owner, None)
        self._refused.discard(owner)
        if self.leases.drop_owner(owner):
            self.on_leases_changed()
        dropped = self.hub.owner_left(owner)
        for subscription in dropped:
            self.signals.ended(subscription, send=False)
        if dropped:
            _LOGGER.info("%s left the bus: ended %d subscription(s)", owner, len(dropped))

    def _introspect(self, path: str) -> str:
        node = ET.Element("node")
        if path == SCANNER_PATH:
            # Merge with whatever else is exported on / (the Venus BusItem tree).
            exported = self.bus._introspect_export_path(path).tostring()
            node = ET.fromstring(exported)
            node.append(ET.fromstring(INTROSPECTION))
            if len(self.hub.subscriptions):
                children = {c.get("name") for c in node.findall("node")}
                if "Subscription" not in children:
                    ET.SubElement(node, "node", name="Subscription")
        elif path.rstrip("/") == SUBSCRIPTION_PATH_PREFIX.rstrip("/"):
            for subscription in self.hub.subscriptions:
                ET.SubElement(node, "node", name=subscription.path.rsplit("/", 1)[1])
        elif self.hub.subscriptions.get(path):
            for text in (_STANDARD_INTERFACES, INTROSPECTION):
                for element in ET.fromstring(f"<x>{text}</x>"):
                    node.append(element)
        return (
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
            + ET.tostring(node, encoding="unicode")
        )
