"""Subscriptions: who owns which, and their limits (docs/dbus-api.md). Pure logic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ..const import (
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    MAX_SUBSCRIPTIONS_TOTAL,
    SUBSCRIPTION_PATH_PREFIX,
)
from .emission import Listener
from .filters import SubscriptionOptions

# A client's path is echoed in the error it gets back; a path of a megabyte
# must not come back whole.
ECHO_LIMIT: Final = 80


class TooManySubscriptions(Exception):
    """A per-connection or total limit would be exceeded (→ LimitsExceeded)."""


class NotOwner(Exception):
    """Only the connection that created a subscription may end it."""


class UnknownSubscription(Exception):
    pass


class Subscription:
    __slots__ = ("listener", "options", "owner", "path")

    def __init__(self, path: str, owner: str, listener: Listener, options: SubscriptionOptions):
        self.path = path
        self.owner = owner
        self.listener = listener
        self.options = options


class SubscriptionRegistry:
    def __init__(
        self,
        per_connection: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
        total: int = MAX_SUBSCRIPTIONS_TOTAL,
    ) -> None:
        self.per_connection = per_connection
        self.total = total
        self._by_path: dict[str, Subscription] = {}
        self._by_owner: dict[str, list[Subscription]] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._by_path)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_path.values())

    def owners(self) -> set[str]:
        return set(self._by_owner)

    def get(self, path: str) -> Subscription | None:
        return self._by_path.get(path)

    def add(self, owner: str, listener: Listener, options: SubscriptionOptions) -> Subscription:
        owned = self._by_owner.get(owner, [])
        if len(owned) >= self.per_connection:
            raise TooManySubscriptions(
                f"a connection may hold at most {self.per_connection} subscriptions"
            )
        if len(self._by_path) >= self.total:
            raise TooManySubscriptions(f"the service holds at most {self.total} subscriptions")
        path = f"{SUBSCRIPTION_PATH_PREFIX}{self._next}"
        self._next += 1
        subscription = Subscription(path, owner, listener, options)
        self._by_path[path] = subscription
        self._by_owner.setdefault(owner, []).append(subscription)
        return subscription

    def remove(self, path: str, caller: str) -> Subscription:
        subscription = self._by_path.get(path)
        if subscription is None:
            raise UnknownSubscription(f"no subscription {path[:ECHO_LIMIT]}")
        if subscription.owner != caller:
            raise NotOwner(f"{path} belongs to another connection")
        self._discard(subscription)
        return subscription

    def drop_owner(self, owner: str) -> list[Subscription]:
        """The owner left the bus: end all its subscriptions."""
        owned = self._by_owner.pop(owner, [])
        for subscription in owned:
            del self._by_path[subscription.path]
        return owned

    def _discard(self, subscription: Subscription) -> None:
        del self._by_path[subscription.path]
        owned = self._by_owner[subscription.owner]
        owned.remove(subscription)
        if not owned:
            del self._by_owner[subscription.owner]
