"""Filters: every key checked, errors name the key, matching is AND across keys, OR within."""

from __future__ import annotations

import math
from typing import Any

import pytest
from dbus_fast import Variant
from hypothesis import given
from hypothesis import strategies as st

from ble_scanner.client.records import Advertisement, make_filter
from ble_scanner.const import MAX_FILTER_LIST_ENTRIES
from ble_scanner.core.cache import Device
from ble_scanner.core.filters import (
    FilterTooLarge,
    InvalidFilter,
    parse_snapshot_query,
    parse_subscription,
    same_verdicts,
)
from ble_scanner.core.identifiers import normalize_address, normalize_uuid
from ble_scanner.core.record import Content


def device(
    address: str = "C0:11:22:33:44:55",
    rssi: int | None = -60,
    name: str | None = "Ruuvi 1234",
    mfr: dict[int, bytes] | None = None,
    sd: dict[str, bytes] | None = None,
    uuids: tuple[str, ...] = (),
) -> Device:
    d = Device(address, 0.0, 0.0)
    d.rssi = rssi
    d.content = Content(name, None, mfr or {0x0499: b"\x05"}, sd or {}, uuids)
    return d


def test_empty_filter_matches_everything() -> None:
    q = parse_snapshot_query({})
    assert q.filter.is_everything and q.filter.matches(device())


def test_and_across_keys_or_within() -> None:
    flt = parse_snapshot_query(
        {
            "ManufacturerIds": Variant("aq", [0x02E1, 0x0499]),
            "MinRssi": Variant("n", -70),
        }
    ).filter
    assert flt.matches(device(rssi=-60))
    assert not flt.matches(device(rssi=-80))
    assert not flt.matches(device(mfr={0x004C: b""}))


def test_addresses_match_case_insensitively() -> None:
    flt = parse_snapshot_query({"Addresses": Variant("as", ["c0:11:22:33:44:55"])}).filter
    assert flt.matches(device())
    assert not flt.matches(device(address="C0:11:22:33:44:56"))


def test_service_uuid_short_forms_match_128_bit() -> None:
    flt = parse_snapshot_query({"ServiceUuids": Variant("as", ["180f"])}).filter
    assert flt.matches(device(uuids=("0000180f-0000-1000-8000-00805f9b34fb",)))
    assert not flt.matches(device(uuids=()))


def test_service_data_uuids() -> None:
    flt = parse_snapshot_query({"ServiceDataUuids": Variant("as", ["fcd2"])}).filter
    assert flt.matches(device(sd={"0000fcd2-0000-1000-8000-00805f9b34fb": b"\x40"}))
    assert not flt.matches(device())


def test_names_are_shell_globs() -> None:
    flt = parse_snapshot_query({"Names": Variant("as", ["Ruuvi *", "SmartShunt"])}).filter
    assert flt.matches(device(name="Ruuvi 1234"))
    assert not flt.matches(device(name="ruuvi 1234"))
    assert not flt.matches(device(name=None))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"Bogus": Variant("s", "")}, "Bogus"),
        ({"MinRssi": Variant("i", -60)}, "MinRssi"),
        ({"MinRssi": Variant("n", -500)}, "MinRssi"),
        ({"Addresses": Variant("as", ["nope"])}, "Addresses"),
        ({"ServiceUuids": Variant("as", ["xyz"])}, "ServiceUuids"),
        ({"MaxAge": Variant("d", -1.0)}, "MaxAge"),
        ({"MaxAge": Variant("d", float("nan"))}, "MaxAge"),
        ({"Names": Variant("as", ["*a*a*a*a*a*a*a*a*a*"])}, "Names"),
        ({"Names": Variant("as", ["x" * 300])}, "Names"),
        ({"Replay": Variant("b", True)}, "Replay"),
    ],
)
def test_bad_snapshot_filters_name_the_key(raw: dict[str, Variant], key: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_snapshot_query(raw)
    assert info.value.key == key
    assert key in str(info.value)


def test_too_many_list_entries() -> None:
    raw = {"ManufacturerIds": Variant("aq", list(range(MAX_FILTER_LIST_ENTRIES + 1)))}
    with pytest.raises(FilterTooLarge):
        parse_snapshot_query(raw)


def test_subscription_options() -> None:
    flt, options = parse_subscription(
        {
            "AllReports": Variant("b", True),
            "RssiDelta": Variant("n", 3),
            "KeepAlive": Variant("d", 10.0),
            "Replay": Variant("b", False),
        }
    )
    assert flt.is_everything
    assert options.all_reports and options.rssi_delta == 3
    assert options.keep_alive == 10.0 and not options.replay


def test_subscription_defaults_come_from_the_service() -> None:
    _, options = parse_subscription({})
    assert options.rssi_delta is None and options.keep_alive is None and options.replay
    assert not options.batch and options.batch_window == 0 and not options.changed_keys_only


def test_batch_options() -> None:
    _, options = parse_subscription(
        {
            "Batch": Variant("b", True),
            "BatchWindow": Variant("d", 0.25),
            "ChangedKeysOnly": Variant("b", True),
        }
    )
    assert options.batch and options.batch_window == 0.25 and options.changed_keys_only


def test_batch_companions_at_their_defaults_need_no_batch() -> None:
    _, options = parse_subscription(
        {"BatchWindow": Variant("d", 0.0), "ChangedKeysOnly": Variant("b", False)}
    )
    assert not options.batch


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"MaxAge": Variant("d", 5.0)}, "MaxAge"),
        ({"RssiDelta": Variant("n", -1)}, "RssiDelta"),
        ({"KeepAlive": Variant("d", -1.0)}, "KeepAlive"),
        ({"AllReports": Variant("s", "yes")}, "AllReports"),
        ({"Batch": Variant("s", "yes")}, "Batch"),
        ({"Batch": Variant("b", True), "BatchWindow": Variant("d", 1.5)}, "BatchWindow"),
        ({"Batch": Variant("b", True), "BatchWindow": Variant("d", -0.1)}, "BatchWindow"),
        ({"Batch": Variant("b", True), "BatchWindow": Variant("d", math.nan)}, "BatchWindow"),
        ({"Batch": Variant("b", True), "BatchWindow": Variant("u", 1)}, "BatchWindow"),
        ({"BatchWindow": Variant("d", 0.5)}, "BatchWindow"),
        ({"Batch": Variant("b", False), "ChangedKeysOnly": Variant("b", True)}, "ChangedKeysOnly"),
        ({"Batch": Variant("b", True), "ChangedKeysOnly": Variant("n", 1)}, "ChangedKeysOnly"),
    ],
)
def test_bad_subscription_options_name_the_key(raw: dict[str, Variant], key: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_subscription(raw)
    assert info.value.key == key


# --- the client's ScanFilter and the service's Filter agree ------------------------

ADDRESS_POOL = ["C0:11:22:33:44:55", "c0:11:22:33:44:66", "F0:00:00:00:00:01"]
COMPANY_POOL = [0x02E1, 0x0499, 0x004C]
UUID_POOL = ["181a", "0000fcd2-0000-1000-8000-00805f9b34fb", "6e400001-b5a3-f393-e0a9-e50e24dcca9e"]
NAME_POOL = ["Ruuvi 1234", "SmartShunt HQ2", "", "ruuvi"]
GLOB_POOL = ["Ruuvi*", "Smart?hunt*", "*", "ruuvi", "[Rr]uuvi*"]


def _maybe_list(pool: list[Any]) -> st.SearchStrategy[list[Any] | None]:
    return st.none() | st.lists(st.sampled_from(pool), max_size=3)


@st.composite
def client_filters(draw: st.DrawFn) -> dict[str, Any]:
    keys = {
        "addresses": draw(_maybe_list(ADDRESS_POOL)),
        "manufacturer_ids": draw(_maybe_list(COMPANY_POOL)),
        "service_uuids": draw(_maybe_list(UUID_POOL)),
        "service_data_uuids": draw(_maybe_list(UUID_POOL)),
        "local_names": draw(_maybe_list(GLOB_POOL)),
        "min_rssi": draw(st.none() | st.integers(-100, -30)),
    }
    return {key: value for key, value in keys.items() if value is not None}


@st.composite
def heard_devices(draw: st.DrawFn) -> tuple[Advertisement, Device]:
    """One report, as the service caches it and as a client receives it."""
    address = normalize_address(draw(st.sampled_from(ADDRESS_POOL)))
    rssi = draw(st.none() | st.integers(-100, -30))
    name = draw(st.none() | st.sampled_from(NAME_POOL))
    mfr = {c: b"\x01" for c in draw(st.lists(st.sampled_from(COMPANY_POOL), max_size=2))}
    sd = {
        normalize_uuid(u): b"\x02" for u in draw(st.lists(st.sampled_from(UUID_POOL), max_size=2))
    }
    uuids = tuple(sorted({normalize_uuid(u) for u in draw(st.lists(st.sampled_from(UUID_POOL)))}))
    cached = Device(address, 0.0, 0.0)
    cached.rssi = rssi
    cached.content = Content(name, None, mfr, sd, uuids)
    adv = Advertisement(address, "public", "hci0", "", rssi, name, None, mfr, sd, uuids, 0.0, 0.0)
    return adv, cached


@given(keys=client_filters(), heard=heard_devices())
def test_the_client_and_the_service_agree_on_every_match(
    keys: dict[str, Any], heard: tuple[Advertisement, Device]
) -> None:
    """What a client filters by itself (BlueZ fallback) is what the service would send it."""
    adv, cached = heard
    client_filter = make_filter(**keys)
    wire = {k: Variant(sig, value) for k, (sig, value) in client_filter.to_dbus(True).items()}
    service_filter, _ = parse_subscription(wire)
    assert client_filter.matches(adv) == service_filter.matches(cached)


@given(
    keys=client_filters(),
    heard=heard_devices(),
    payloads=st.lists(st.binary(max_size=4), min_size=2, max_size=2),
)
def test_content_that_differs_only_in_payloads_gets_the_same_verdict(
    keys: dict[str, Any], heard: tuple[Advertisement, Device], payloads: list[bytes]
) -> None:
    """The hub keeps a device's filter verdicts while ``same_verdicts`` holds: a new
    reading (only payload bytes changed) must never change what a filter says."""
    _, cached = heard
    content = cached.content
    assert content is not None
    wire = {k: Variant(sig, v) for k, (sig, v) in make_filter(**keys).to_dbus(True).items()}
    service_filter, _ = parse_subscription(wire)
    verdicts = []
    for payload in payloads:
        cached.content = Content(
            content.name,
            content.tx_power,
            {company: payload for company in content.manufacturer_data},
            {uuid: payload for uuid in content.service_data},
            content.service_uuids,
        )
        verdicts.append(service_filter.matches_content(cached))
    assert same_verdicts(content, cached.content)
    assert verdicts[0] == verdicts[1] == service_filter.matches_content(cached)


def test_a_new_company_id_name_or_uuid_is_judged_again() -> None:
    base = Content("Ruuvi 1234", None, {0x0499: b"\x05"}, {}, ())
    assert same_verdicts(base, Content("Ruuvi 1234", -4, {0x0499: b"\x06"}, {}, ()))
    assert not same_verdicts(base, Content("Ruuvi 1234", None, {0x02E1: b"\x05"}, {}, ()))
    assert not same_verdicts(base, Content("Ruuvi 9", None, {0x0499: b"\x05"}, {}, ()))
    assert not same_verdicts(base, Content("Ruuvi 1234", None, {0x0499: b"\x05"}, {}, ("x",)))
    assert not same_verdicts(base, Content("Ruuvi 1234", None, {0x0499: b"\x05"}, {"y": b""}, ()))
