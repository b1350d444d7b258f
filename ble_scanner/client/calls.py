"""The client's calls in its own terms: ``ble_scanner.bus.calls``' errors translated once.

Both the proxy and its BlueZ fallback call through ``ble_scanner.bus.calls``;
``client_terms`` is the one place their errors become the client's
(``ble_scanner.client.errors``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dbus_fast import Variant

from ..bus.calls import BusGoneError, CallError
from ..const import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_ARGS,
    ERROR_LIMITS_EXCEEDED,
    ERROR_NAME_HAS_NO_OWNER,
    ERROR_SERVICE_UNKNOWN,
    SCANNER_SERVICE,
)
from .errors import (
    AccessDeniedError,
    BusUnreachableError,
    CallTimeoutError,
    InvalidFilterError,
    ServiceCallError,
    ServiceNotRunningError,
)
from .records import Advertisement


@contextlib.contextmanager
def client_terms() -> Iterator[None]:
    """Raise ``ble_scanner.bus.calls``' errors as the client's own (the one place)."""
    try:
        yield
    except CallError as exc:
        if exc.name in (ERROR_INVALID_ARGS, ERROR_LIMITS_EXCEEDED):
            raise InvalidFilterError(exc.name, exc.text) from exc
        if exc.name == ERROR_ACCESS_DENIED:
            raise AccessDeniedError(exc.name, exc.text) from exc
        if exc.name in (ERROR_SERVICE_UNKNOWN, ERROR_NAME_HAS_NO_OWNER):
            raise ServiceNotRunningError(f"{SCANNER_SERVICE} is not running") from exc
        raise ServiceCallError(exc.name, exc.text) from exc
    except TimeoutError as exc:
        raise CallTimeoutError(str(exc)) from exc
    except BusGoneError as exc:
        raise BusUnreachableError(str(exc)) from exc


def variants(wire: dict[str, tuple[str, Any]]) -> dict[str, Variant]:
    """A filter's ``to_dbus`` as the dbus-fast values a call carries."""
    return {key: Variant(sig, value) for key, (sig, value) in wire.items()}


def record_of(raw: dict[str, Variant]) -> Advertisement:
    """An advertisement record from the service; ValueError if it is malformed."""
    return Advertisement.from_record({key: v.value for key, v in raw.items()})
