"""A velib-style consumer, run by the test under the system python (dbus-python + GLib).

Prints JSON lines: the snapshot, "subscribed", then each event; exits after
``count`` events or ``timeout`` seconds (exit 3), saying last which Scanner1
signals reached it. A third argument ``single`` opts out of batching.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from ble_scanner.client.glib import GlibScannerClient
from ble_scanner.client.records import DeviceLost, Event


def main() -> int:
    count, timeout = int(sys.argv[1]), float(sys.argv[2])
    DBusGMainLoop(set_as_default=True)
    loop = GLib.MainLoop()
    signals: Counter[str] = Counter()

    def count_signal(bus: Any, msg: Any) -> Any:
        if msg.get_interface() == "com.victronenergy.ble.Scanner1":
            signals[msg.get_member()] += 1
        return dbus.lowlevel.HANDLER_RESULT_NOT_YET_HANDLED

    # dbus-python takes a filter's None as "handled": this one, like the client's, passes on.
    bus = dbus.SystemBus()
    bus.add_message_filter(count_signal)
    client = GlibScannerClient(bus, batch=sys.argv[3:] != ["single"])
    result = {"code": 3}

    def emit(obj: dict[str, object]) -> None:
        print(json.dumps(obj), flush=True)

    emit({"snapshot": {a: r.as_dict() for a, r in client.devices().items()}})
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        kind = "lost" if isinstance(event, DeviceLost) else "discovered"
        emit({"event": kind, **event.as_dict()})
        if len(events) >= count:
            result["code"] = 0
            loop.quit()

    client.subscribe(on_event, manufacturer_id=0x02E1)
    emit({"subscribed": True})  # the replay arrives once the loop runs
    GLib.timeout_add(int(timeout * 1000), loop.quit)
    loop.run()
    emit({"signals": signals})
    client.close()
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
