"""Per-adapter fault switches: what the kernel or the world does to bluetoothd."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Faults:
    """Read by the adapter at the moment the kernel would answer."""

    # Kernel refuses the next N Start Discovery commands (deferred InProgress).
    refuse_starts: int = 0
    # Another process scans over raw HCI: every kernel start fails until cleared
    # (venus#1597: InProgress with Discovering false).
    external_scanner: bool = False
    # Kernel refuses the next N Stop Discovery commands (bluez#807).
    refuse_stops: int = 0
    # Discovering stays true but no report reaches bluetoothd.
    silent: bool = False
    # Loop time until which the kernel still runs a crashed bluetoothd's
    # discovery and refuses every start (see BluezSimulator orphan_scan).
    busy_until: float = 0.0

    def take_start_refusal(self, now: float) -> bool:
        if self.external_scanner or now < self.busy_until:
            return True
        if self.refuse_starts > 0:
            self.refuse_starts -= 1
            return True
        return False

    def take_stop_refusal(self) -> bool:
        if self.refuse_stops > 0:
            self.refuse_stops -= 1
            return True
        return False
