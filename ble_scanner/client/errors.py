"""Errors a client of the scanner service can catch, from general to specific."""

from __future__ import annotations


class ScannerError(Exception):
    """Base class of everything the client raises on purpose."""


class BusUnreachableError(ScannerError):
    """The system bus cannot be reached (no daemon, wrong DBUS_SYSTEM_BUS_ADDRESS...)."""


class BusLostError(BusUnreachableError):
    """The connection to the system bus ended under a connected client.

    The bus daemon stopped or restarted (a package upgrade, by hand): every
    subscription and call of this client is over. Connect a new client once
    the bus is back.
    """


class ServiceNotRunningError(ScannerError):
    """``com.victronenergy.ble.scanner`` has no owner (and no fallback was asked for)."""


class UntrustedServiceError(ScannerError):
    """The scanner's bus name is owned by a process that is neither root nor us.

    Anything it sends could be forged, so the client refuses to use it.
    """

    def __init__(self, owner: str, uid: int | None) -> None:
        who = "an unknown user" if uid is None else f"uid {uid}"
        super().__init__(
            f"com.victronenergy.ble.scanner is owned by {owner}, running as {who}; "
            "only root or this process's own user is trusted"
        )
        self.owner = owner
        self.uid = uid


class ServiceCallError(ScannerError):
    """The service answered a call with a D-Bus error."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


class InvalidFilterError(ServiceCallError, ValueError):
    """The service refused the filter (``InvalidArgs`` or ``LimitsExceeded``)."""


class AccessDeniedError(ServiceCallError):
    """The caller may not do this (``org.freedesktop.DBus.Error.AccessDenied``): steering
    the radio needs root or the service's steer group; the text says what is needed."""


class CallTimeoutError(ScannerError, TimeoutError):
    """A call got no answer within the client's timeout."""
