"""Subscriptions: who owns which, and their limits (docs/dbus-api.md). Pure logic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ..const import (
    DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
    DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    MAX_SUBSCRIPTIONS_TOTAL,
    SUBSCRIPTION_PATH_PREFIX,
)
from .access import ROOT
from .delta import Sent
from .emission import Listener
from .filters import SubscriptionOptions

# A client's path is echoed in the error it gets back; a path of a megabyte
# must not come back whole.
ECHO_LIMIT: Final = 80


class TooManySubscriptions(Exception):
    """A per-connection, per-user or total limit would be exceeded (→ LimitsExceeded);
    the text names the limit."""


class NotOwner(Exception):
    """Only the connection that created a subscription may end it."""


class UnknownSubscription(Exception):
    pass


class Batch:
    """A batched subscription's DevicesDiscovered items not sent yet (bus/batches.py sends
    them), and for ChangedKeysOnly the record each device's last item left the client with.

    ``sent`` holds an entry per device this subscription was told about and not
    told lost: it is bounded by the cache, as ``Listener.sent`` is.
    """

    __slots__ = ("items", "nbytes", "sent", "shed", "window")

    def __init__(self, window: float, changed_keys_only: bool) -> None:
        self.window = window
        self.items: list[bytes] = []
        self.nbytes = 0
        self.sent: dict[str, Sent] | None = {} if changed_keys_only else None
        self.shed = 0  # items dropped because the bus did not keep up (bus/batches.py)

    def add(self, item: bytes) -> None:
        self.items.append(item)
        self.nbytes += len(item)

    def take(self) -> list[bytes]:
        """The items gathered so far, in order; the batch is empty after."""
        items = self.items
        self.items = []
        self.nbytes = 0
        return items

    def forget(self, address: str) -> None:
        """The device's next item is its full record (it was lost, or an item was shed)."""
        if self.sent is not None:
            self.sent.pop(address, None)


class Subscription:
    __slots__ = ("batch", "listener", "options", "owner", "path", "uid")

    def __init__(
        self,
        path: str,
        owner: str,
        listener: Listener,
        options: SubscriptionOptions,
        uid: int = ROOT,
    ):
        self.path = path
        self.owner = owner
        self.uid = uid  # the owner's Unix user, for the per-user limit
        self.listener = listener
        self.options = options
        self.batch = (
            Batch(options.batch_window, options.changed_keys_only) if options.batch else None
        )


class SubscriptionRegistry:
    """Subscriptions by path and by owner, within their limits.

    Root is bounded only per connection and by the total; any other user also
    by ``per_user``, and may not take the last ``reserved_for_root``.
    """

    def __init__(
        self,
        per_connection: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
        total: int = MAX_SUBSCRIPTIONS_TOTAL,
        per_user: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
        reserved_for_root: int = DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
    ) -> None:
        self.per_connection = per_connection
        self.total = total
        self.per_user = per_user
        self.reserved_for_root = reserved_for_root
        self._by_path: dict[str, Subscription] = {}
        self._by_owner: dict[str, list[Subscription]] = {}
        self._by_uid: dict[int, int] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._by_path)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_path.values())

    def owners(self) -> set[str]:
        return set(self._by_owner)

    def uids(self) -> set[int]:
        """The Unix users holding subscriptions."""
        return set(self._by_uid)

    def get(self, path: str) -> Subscription | None:
        return self._by_path.get(path)

    def add(
        self, owner: str, listener: Listener, options: SubscriptionOptions, uid: int = ROOT
    ) -> Subscription:
        self._check_room(owner, uid)
        path = f"{SUBSCRIPTION_PATH_PREFIX}{self._next}"
        self._next += 1
        subscription = Subscription(path, owner, listener, options, uid)
        self._by_path[path] = subscription
        self._by_owner.setdefault(owner, []).append(subscription)
        self._by_uid[uid] = self._by_uid.get(uid, 0) + 1
        return subscription

    def _check_room(self, owner: str, uid: int) -> None:
        """TooManySubscriptions, naming the limit, unless ``owner`` (of ``uid``) may add one."""
        if len(self._by_owner.get(owner, ())) >= self.per_connection:
            raise TooManySubscriptions(
                f"a connection may hold at most {self.per_connection} subscriptions"
            )
        held = len(self._by_path)
        if held >= self.total:
            raise TooManySubscriptions(f"the service holds at most {self.total} subscriptions")
        if uid == ROOT:
            return
        if self._by_uid.get(uid, 0) >= self.per_user:
            raise TooManySubscriptions(
                f"uid {uid} may hold at most {self.per_user} subscriptions "
                "over all its connections (MaxSubscriptionsPerUser)"
            )
        if held >= self.total - self.reserved_for_root:
            raise TooManySubscriptions(
                f"the last {self.reserved_for_root} of the service's {self.total} subscriptions "
                "are kept for root (SubscriptionsReservedForRoot)"
            )

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
            self._uncount(subscription.uid)
        return owned

    def _uncount(self, uid: int) -> None:
        left = self._by_uid[uid] - 1
        if left:
            self._by_uid[uid] = left
        else:
            del self._by_uid[uid]

    def _discard(self, subscription: Subscription) -> None:
        del self._by_path[subscription.path]
        self._uncount(subscription.uid)
        owned = self._by_owner[subscription.owner]
        owned.remove(subscription)
        if not owned:
            del self._by_owner[subscription.owner]
