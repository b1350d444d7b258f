"""Objects published exactly as given, for robustness tests (malformed Device1 data)."""

from __future__ import annotations

from dbus_fast import Message, Variant


class RawObject:
    """Any interfaces with any property values; no methods, nothing settable."""

    def __init__(self, path: str, interfaces: dict[str, dict[str, Variant]]) -> None:
        self.path = path
        self.interfaces = interfaces

    def interface_names(self) -> list[str]:
        return list(self.interfaces)

    def get_all(self, interface: str) -> dict[str, Variant] | None:
        return self.interfaces.get(interface)

    def get(self, interface: str, name: str) -> Variant | None:
        return self.interfaces.get(interface, {}).get(name)

    def set_property(
        self, interface: str, name: str, value: Variant, msg: Message
    ) -> Message | bool | None:
        return None

    def call(self, interface: str, member: str, msg: Message) -> Message | bool | None:
        return None


class BluezRoot:
    """``/org/bluez``: AgentManager1, which answers but never calls an agent."""

    path = "/org/bluez"

    def interface_names(self) -> list[str]:
        return ["org.bluez.AgentManager1"]

    def get_all(self, interface: str) -> dict[str, Variant] | None:
        return {} if interface == "org.bluez.AgentManager1" else None

    def get(self, interface: str, name: str) -> Variant | None:
        return None

    def set_property(
        self, interface: str, name: str, value: Variant, msg: Message
    ) -> Message | bool | None:
        return None

    def call(self, interface: str, member: str, msg: Message) -> Message | bool | None:
        signatures = {"RegisterAgent": "os", "UnregisterAgent": "o", "RequestDefaultAgent": "o"}
        if signatures.get(member) == msg.signature:
            return Message.new_method_return(msg)
        return None
