"""A discovery client: one D-Bus sender's session and filter on one adapter."""

from __future__ import annotations

from dbus_fast import Message

from .filters import DiscoveryFilter


class Session:
    """``struct discovery_client``: keyed by the sender's unique name."""

    __slots__ = ("filter", "owner", "pending", "stopping")

    def __init__(self, owner: str, discovery_filter: DiscoveryFilter | None = None) -> None:
        self.owner = owner
        self.filter = discovery_filter
        # The StartDiscovery / StopDiscovery call waiting for the kernel.
        self.pending: Message | None = None
        self.stopping = False
