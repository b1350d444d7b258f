"""The report path of management ingest (bluez/reports.py ``Reports.found``) against its
definition: a report's frame parsed as before, put onto Device1 as bluetoothd would
(device_changes, in tests/unit/test_mgmt.py) and checked as a D-Bus value is (DeviceView.update).

Reports.found does less: mgmt.apply_report puts what parse_eir made onto the view
without the Device1-shaped dict and the D-Bus checks, mgmt.apply_reading takes a
sensor's next reading without parsing, mgmt.apply_rssi an advertisement heard again.
For random sequences of frames they must make the same views, the same reports and
the same malformed counts. (Reports imports dbus_fast for its D-Bus side, so this
file runs on both dbus-fast versions.)
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ble_scanner.bluez import mgmt
from ble_scanner.bluez.mgmt import Found, Malformed, parse_frame
from ble_scanner.bluez.reports import RateLimitedLog, Reports
from ble_scanner.core.record import DeviceView, MalformedData, adapter_name
from tests.unit.test_mgmt import (
    ADDRESS,
    ad,
    device_changes,
    eirs,
    found_params,
    frame,
    parse_eir_as_before,
)


class Sink:
    """Each report as the hub would read the view at that moment."""

    def __init__(self) -> None:
        self.reports: list[tuple[object, ...]] = []

    def report(self, view: DeviceView) -> None:
        self.reports.append(snapshot(view))

    def listening(self, adapter: str, listening: bool) -> None:
        pass


def snapshot(view: DeviceView) -> tuple[object, ...]:
    """Everything a view holds; mappings as item lists, so that their order counts too."""
    c = view.content
    return (
        view.path,
        view.adapter,
        view.address,
        view.address_type,
        view.rssi,
        view.eir,
        c.name,
        c.tx_power,
        list(c.manufacturer_data.items()),
        list(c.service_data.items()),
        c.service_uuids,
    )


class GeneralReports(Reports):
    """Reports.found as it was: parse_eir_as_before, device_changes and DeviceView.update."""

    def found(self, found: Found, duplicate: bool) -> None:
        path = found.path
        view = self.views.get(path)
        eir = (found.eir, duplicate)
        if (
            view is not None
            and view.eir == eir
            and found.address == view.address
            and found.address_type == view.address_type
        ):
            view.update({"RSSI": mgmt.rssi_value(found)})
            view.eir = eir
            self.sink.report(view)
            return
        ad = parse_eir_as_before(found.eir)
        if isinstance(ad, Malformed):
            self.malformed("frame", f"malformed advertisement from {found.address}: {ad.reason}")
            return
        if view is None:
            if found.scan_response:
                return
            view = DeviceView(path, adapter_name(path))
        try:
            view.update(device_changes(view, found, ad, duplicate))
        except MalformedData as exc:
            self.malformed("device", f"malformed advertisement from {found.address}: {exc}")
            return
        view.eir = eir
        self.views[path] = view
        self.sink.report(view)


reports_of_devices = st.lists(
    st.tuples(
        st.sampled_from([ADDRESS, bytes([0x02, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA])]),
        st.sampled_from([1, 2]),  # public, random: a device may change its type
        st.sampled_from([-60, -75, 20, 21, 127, -127, -128]),
        st.sampled_from([0, mgmt.FLAG_SCAN_RESPONSE, mgmt.FLAG_NOT_CONNECTABLE]),
        st.booleans(),  # DuplicateData
        eirs(),
        # The device's previous advertisement again, or with one byte changed (at the
        # end, most often a payload byte: a sensor's next reading), or a new one.
        st.one_of(
            st.none(),
            st.just(0),
            st.tuples(st.integers(1, 40), st.integers(0, 255)),
        ),
        # No Found parse_frame makes, but one the view must refuse as before.
        st.sampled_from([None, None, None, None, -128, 21, 127]),
    ),
    min_size=1,
    max_size=12,
)


def next_advertisement(
    previous: bytes | None, eir: bytes, change: int | tuple[int, int] | None
) -> bytes:
    if previous is None or change is None:
        return eir
    if change == 0 or not previous:
        return previous
    back, value = change  # type: ignore[misc]
    at = max(len(previous) - back, 0)
    return previous[:at] + bytes([value]) + previous[at + 1 :]


# Without DuplicateData, keys the view holds keep their place when a report names
# them in another order (bluetoothd merges into what it holds).
COMPANIES_IN_TURN = [
    ad(0xFF, b"\xe1\x02\x01") + ad(0xFF, b"\x99\x04\x02"),
    ad(0xFF, b"\x99\x04\x03") + ad(0xFF, b"\xe1\x02\x04"),
]
SERVICES_IN_TURN = [
    ad(0x16, b"\x0f\x18\x01") + ad(0x16, b"\x1a\x18\x02"),
    ad(0x16, b"\x1a\x18\x03") + ad(0x16, b"\x0f\x18\x04"),
]


# One advertisement, another with another key, then its next reading.
NEW_READING = {
    kind: [(ad(kind, first), None), (ad(kind, second), None), (b"", (1, 9))]
    for kind, first, second in (
        (0xFF, b"\xe1\x02\x01", b"\x99\x04\x02\x03"),
        (0x16, b"\x0f\x18\x01", b"\x1a\x18\x02\x03"),
    )
}


@settings(max_examples=400, deadline=None)
@given(sequence=reports_of_devices)
@example([(ADDRESS, 2, -60, 0, False, eir, None, None) for eir in COMPANIES_IN_TURN])
@example([(ADDRESS, 2, -60, 0, False, eir, None, None) for eir in SERVICES_IN_TURN])
# A new reading in the last payload: of the one the view holds besides another
# (without DuplicateData), and of two in one advertisement.
@example([(ADDRESS, 2, -60, 0, False, eir, c, None) for eir, c in NEW_READING[0xFF]])
@example([(ADDRESS, 2, -60, 0, False, eir, c, None) for eir, c in NEW_READING[0x16]])
@example([(ADDRESS, 2, -60, 0, True, COMPANIES_IN_TURN[0], c, None) for c in (None, (1, 7))])
@example([(ADDRESS, 2, -60, 0, True, SERVICES_IN_TURN[0], c, None) for c in (None, (1, 7))])
def test_the_report_path_makes_the_views_the_general_path_does(
    sequence: list[tuple[bytes, int, int, int, bool, bytes, int | tuple[int, int] | None, int]],
) -> None:
    fast_sink, general_sink = Sink(), Sink()
    fast, general = (
        Reports(fast_sink, RateLimitedLog()),
        GeneralReports(general_sink, RateLimitedLog()),
    )
    last: dict[bytes, bytes] = {}
    for address, kind, rssi, flags, duplicate, eir, change, odd_rssi in sequence:
        eir = last[address] = next_advertisement(last.get(address), eir, change)
        event = parse_frame(frame(0x0012, 0, found_params(eir, kind, rssi, flags, address)))
        assert isinstance(event, Found)
        if odd_rssi is not None:
            event.rssi = odd_rssi
        kept, raised = [], []
        for reports in (fast, general):
            before = {p: v.content for p, v in reports.views.items()}
            try:
                reports.found(event, duplicate)
            except MalformedData as exc:
                raised.append(str(exc))
            # A content object is made again only when the content changed, as before.
            kept.append({p: v.content is before.get(p) for p, v in reports.views.items()})
        assert len(raised) in (0, 2)
        assert fast_sink.reports == general_sink.reports
        assert {p: snapshot(v) for p, v in fast.views.items()} == {
            p: snapshot(v) for p, v in general.views.items()
        }
        assert kept[0] == kept[1]
        assert fast.malformed.counts == general.malformed.counts
