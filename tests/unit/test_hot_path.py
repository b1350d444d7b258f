"""The shortcuts on the report path change nothing a listener can observe."""

from __future__ import annotations

from ble_scanner.core.filters import Filter, SubscriptionOptions
from ble_scanner.core.record import Content, DeviceView
from tests.unit.test_hub import ADDR, heard, make

VICTRON, RUUVI = 0x02E1, 0x0499
NO_REPLAY = SubscriptionOptions(replay=False, keep_alive=0)


def test_a_repeated_payload_keeps_the_parsed_content() -> None:
    view = DeviceView("/org/bluez/hci0/dev_C0_11_22_33_44_55", "hci0")
    view.update({"Address": ADDR, "ManufacturerData": {VICTRON: b"\x10\x02"}})
    before = view.content
    assert view.update({"ManufacturerData": {VICTRON: bytearray(b"\x10\x02")}, "RSSI": -50})
    assert view.content is before
    view.update({"ManufacturerData": {VICTRON: b"\x10\x03"}})
    assert view.content is not before
    assert view.content.manufacturer_data == {VICTRON: b"\x10\x03"}


def test_a_subscription_made_after_a_device_was_cached_hears_its_next_report() -> None:
    scanner, recorder, _ = make()
    heard(scanner, mfr={VICTRON: b"\x10"})
    subscription, _ = scanner.subscribe(
        ":1.5", Filter(manufacturer_ids=frozenset({VICTRON})), NO_REPLAY
    )
    recorder.take()
    heard(scanner, mfr={VICTRON: b"\x10"})
    assert recorder.take() == [("discovered", ADDR, False, [subscription.path])]


def test_a_content_change_is_filtered_again() -> None:
    scanner, recorder, _ = make()
    subscription, _ = scanner.subscribe(
        ":1.5", Filter(manufacturer_ids=frozenset({VICTRON})), NO_REPLAY
    )
    heard(scanner, mfr={RUUVI: b"\x05"})
    assert recorder.take() == [("discovered", ADDR, True, [])]
    heard(scanner, mfr={VICTRON: b"\x10"})
    assert recorder.take() == [("discovered", ADDR, True, [subscription.path])]
    heard(scanner, mfr={RUUVI: b"\x05"})
    assert recorder.take() == [("discovered", ADDR, True, [])]


def test_an_ended_subscription_hears_nothing_more() -> None:
    scanner, recorder, _ = make()
    subscription, _ = scanner.subscribe(":1.5", Filter(), NO_REPLAY)
    heard(scanner, mfr={VICTRON: b"\x10"})
    assert recorder.take() == [("discovered", ADDR, True, [subscription.path])]
    scanner.unsubscribe(subscription.path, ":1.5")
    heard(scanner, mfr={VICTRON: b"\x11"})
    assert recorder.take() == [("discovered", ADDR, True, [])]
    other, _ = scanner.subscribe(":1.6", Filter(), NO_REPLAY)
    scanner.owner_left(":1.6")
    heard(scanner, mfr={VICTRON: b"\x12"})
    assert recorder.take() == [("discovered", ADDR, True, [])]


def test_min_rssi_is_judged_on_every_report_not_once_per_content() -> None:
    scanner, recorder, _ = make()
    subscription, _ = scanner.subscribe(":1.5", Filter(min_rssi=-70), NO_REPLAY)
    heard(scanner, rssi=-80, mfr={VICTRON: b"\x10"})
    assert recorder.take() == [("discovered", ADDR, True, [])]
    heard(scanner, rssi=-60, mfr={VICTRON: b"\x10"})
    assert recorder.take() == [("discovered", ADDR, True, [subscription.path])]


def test_a_new_reading_is_not_filtered_again_a_new_company_id_is() -> None:
    scanner, _, _ = make()
    subscription, _ = scanner.subscribe(
        ":1.5", Filter(manufacturer_ids=frozenset({VICTRON})), NO_REPLAY
    )
    device = heard(scanner, mfr={VICTRON: b"\x10"})
    assert device is not None and device.interest == (subscription,)

    def cached(mfr: dict[int, bytes]) -> None:
        content = Content(None, None, mfr, {}, ())
        scanner.cache.report(ADDR, "public", "hci0", device.path, -60, content, 0.0, 1.0)

    cached({VICTRON: b"\x11"})
    assert device.interest == (subscription,)  # the verdicts were kept
    cached({RUUVI: b"\x11"})
    assert device.interest is None  # filtered again at its next report
