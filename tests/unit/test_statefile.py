"""The state file: what goes in comes out, too-old devices stay out, bad files are refused whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ble_scanner.config import ScannerConfig
from ble_scanner.core import statefile
from ble_scanner.core.filters import Filter, SubscriptionOptions
from ble_scanner.core.statefile import (
    FORMAT_VERSION,
    StateFileError,
    decode,
    encode,
    read,
    write_atomically,
)
from ble_scanner.main import build_parser
from ble_scanner.service import record_variants
from tests.unit.test_hub import ADDR, heard, make

OTHER = "C0:11:22:33:44:66"
UUID = "0000181a-0000-1000-8000-00805f9b34fb"


def saved_hub() -> tuple[bytes, dict[str, dict[str, object]]]:
    """A hub with two devices, its file's bytes, and its records (without LastSeen drift)."""
    hub, _, clock = make(ScannerConfig(lost_timeout=180))
    for _ in range(17):
        heard(hub, name="SmartShunt", mfr={0x02E1: b"\x10\x02\xff"})
        clock.now += 1.0
    heard(hub, address=OTHER, rssi=-80, mfr={})
    records = {d.address: {k: v.value for k, v in record_variants(d).items()} for d in hub.cache}
    return encode(hub.cache, clock.now, clock.now), records


def test_a_saved_cache_comes_back_equal_marked_restored_and_at_its_age() -> None:
    data, records = saved_hub()
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    clock.now += 2.0  # the restart took 2 s
    devices, too_old = decode(data, clock.now, 1017.0 + 2.0, 180.0)
    assert too_old == 0
    restored = hub.restore(devices)
    assert {d.address for d in restored} == set(records)
    for device in hub.cache:
        record = {k: v.value for k, v in record_variants(device).items()}
        assert record.pop("Restored") is True
        assert record == records[device.address]
    assert rec.take() == []


def test_restored_devices_heard_again_are_not_news_and_lose_the_mark() -> None:
    data, _ = saved_hub()
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    hub.restore(decode(data, clock.now, 1017.0, 180.0)[0])
    heard(hub, name="SmartShunt", mfr={0x02E1: b"\x10\x02\xff"})
    assert rec.take() == []  # no DeviceDiscovered storm after a restart
    device = hub.cache.get(ADDR)
    assert device is not None and not device.restored
    assert "Restored" not in record_variants(device)
    assert device.interval == 1.0  # kept; the gap across the restart is not one


def test_restored_devices_are_replayed_to_a_new_subscription_at_once() -> None:
    data, _ = saved_hub()
    hub, _, clock = make(ScannerConfig(lost_timeout=180))
    hub.restore(decode(data, clock.now, 1017.0, 180.0)[0])
    _, replay = hub.subscribe(":1.5", Filter(), SubscriptionOptions())
    assert {d.address for d in replay} == {ADDR, OTHER}
    assert all(record_variants(d)["Restored"].value is True for d in replay)


def test_devices_the_settings_now_ignore_are_not_restored() -> None:
    data, _ = saved_hub()
    hub, _, clock = make(ScannerConfig(ignore_addresses=frozenset({OTHER})))
    restored = hub.restore(decode(data, clock.now, 1017.0, 180.0)[0])
    assert [d.address for d in restored] == [ADDR]


def test_devices_unheard_past_their_lost_time_are_not_restored() -> None:
    data, _ = saved_hub()
    # The time the service was down is no silence (nobody listened), unless it
    # outlasted the lost timeout: ADDR (lost after 8 s) is kept after 10 s away.
    devices, too_old = decode(data, 0.0, 1017.0 + 10.0, 180.0)
    assert sorted(d.address for d in devices) == sorted([ADDR, OTHER])
    assert too_old == 0
    assert decode(data, 0.0, 1017.0 + 180.0, 180.0) == ([], 2)


def test_restored_devices_are_lost_on_time_if_not_heard() -> None:
    data, _ = saved_hub()
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    # Written 1 s after its last report, read 5 s later: the 5 s away are not
    # silence (nobody listened), so 1 s of its 8 is gone.
    hub.restore(decode(data, clock.now, 1017.0 + 5.0, 180.0)[0])
    clock.now += 6.9
    assert hub.sweep() == []
    clock.now += 0.1
    assert [d.address for d in hub.sweep()] == [ADDR]
    assert rec.take() == [("lost", ADDR, True, [])]


def document(data: bytes) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(data)
    return loaded


def with_device(data: bytes, **changes: object) -> bytes:
    doc = document(data)
    entries = doc["devices"]
    assert isinstance(entries, list)
    entries[0].update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda d: d[: len(d) // 2], "not JSON"),
        (lambda d: b"\x00\xff garbage", "not JSON"),
        (lambda d: b"[" * 100_000, "not JSON"),
        (lambda d: b"{}", "not a dbus-ble-scanner devices file"),
        (lambda d: d.replace(b'"version":1', b'"version":2'), "format version 2"),
        (lambda d: d.replace(b'"saved":1017.0', b'"saved":5000.0'), "in the future"),
        (lambda d: d.replace(b'"saved":1017.0', b'"saved":"now"'), "saved is not a number"),
        (lambda d: with_device(d, address="nonsense"), "device 0: not a Bluetooth address"),
        (lambda d: with_device(d, path="/org/bluez/hci0/dev_00"), "is not BlueZ's"),
        (lambda d: with_device(d, adapter="hci7"), "is not the path's"),
        (lambda d: with_device(d, rssi=500), "RSSI 500 out of range"),
        (lambda d: with_device(d, manufacturer_data={"737": "zz"}), "device 0"),
        (lambda d: with_device(d, manufacturer_data={"70000": "00"}), "company id"),
        (lambda d: with_device(d, service_uuids=["x"]), "not a UUID"),
        (lambda d: with_device(d, age=-1), "age is negative"),
        (lambda d: with_device(d, interval=float("nan")), "device 0"),
    ],
)
def test_a_bad_file_is_refused_whole_with_the_reason(bad: object, reason: str) -> None:
    data, _ = saved_hub()
    assert b'"saved":1017.0' in data
    with pytest.raises(StateFileError, match=reason):
        decode(bad(data), 0.0, 1017.0, 180.0)  # type: ignore[operator]


def test_the_file_says_its_format_and_version() -> None:
    data, _ = saved_hub()
    doc = document(data)
    assert doc["format"] == "dbus-ble-scanner devices"
    assert doc["version"] == FORMAT_VERSION


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state" / "devices.json"
    write_atomically(str(path), b"one")
    write_atomically(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["devices.json"]
    assert read(str(path)) == b"two"
    assert read(str(tmp_path / "none.json")) is None


def test_a_path_that_is_a_directory_cannot_be_read_or_written(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="cannot be read"):
        read(str(tmp_path))
    with pytest.raises(OSError):
        write_atomically(str(tmp_path), b"x")
    assert os.listdir(tmp_path) == []


def test_the_default_file_is_under_data_on_venus_and_var_lib_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statefile, "VENUS_MARKER", str(tmp_path))  # /opt/victronenergy exists
    assert statefile.default_path() == "/data/var/lib/dbus-ble-scanner/devices.json"
    monkeypatch.setattr(statefile, "VENUS_MARKER", str(tmp_path / "absent"))
    assert statefile.default_path() == "/var/lib/dbus-ble-scanner/devices.json"


def test_the_options_name_a_file_or_none_and_a_save_interval() -> None:
    parser = build_parser()
    args = parser.parse_args([])
    assert (args.state_file, args.state_save_interval) == (None, 300.0)  # None: the default
    args = parser.parse_args(["--state-file", "", "--state-save-interval", "5"])
    assert (args.state_file, args.state_save_interval) == ("", 5.0)
