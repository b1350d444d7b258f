"""bluez/mgmt.py: management frames and AD structures from hand-written bytes, and fuzzed."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_scanner.bluez import mgmt
from ble_scanner.bluez.mgmt import (
    Advertisement,
    Connected,
    Disconnected,
    Found,
    Malformed,
    Other,
    parse_eir,
    parse_frame,
    rssi_value,
)
from ble_scanner.core.record import DeviceView, MalformedData

# AA:BB:CC:DD:EE:01, least significant byte first, as the kernel sends it.
ADDRESS = bytes([0x01, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA])
VICTRON = 0x02E1
BATTERY_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
ESS_UUID = "0000181a-0000-1000-8000-00805f9b34fb"


def frame(code: int, index: int, params: bytes) -> bytes:
    return struct.pack("<HHH", code, index, len(params)) + params


def found_params(
    eir: bytes, address_type: int = 2, rssi: int = -60, flags: int = 0, address: bytes = ADDRESS
) -> bytes:
    return address + struct.pack("<BbIH", address_type, rssi, flags, len(eir)) + eir


def ad(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


# --- frames ----------------------------------------------------------------------


def test_device_found_as_the_kernel_sends_it() -> None:
    eir = ad(0x01, b"\x06") + ad(0xFF, b"\xe1\x02\x10\x20")
    event = parse_frame(frame(0x0012, 1, found_params(eir, rssi=-71, flags=0x04)))
    assert event == Found(1, "AA:BB:CC:DD:EE:01", "random", -71, 0x04, eir)
    assert isinstance(event, Found)
    assert event.path == "/org/bluez/hci1/dev_AA_BB_CC_DD_EE_01"
    assert not event.scan_response


def test_adv_monitor_device_found_carries_the_handle_first() -> None:
    params = struct.pack("<H", 3) + found_params(b"", address_type=1)
    event = parse_frame(frame(0x002F, 0, params))
    assert event == Found(0, "AA:BB:CC:DD:EE:01", "public", -60, 0, b"", monitor=3)


@pytest.mark.parametrize(("rssi", "expected"), [(127, None), (-128, None), (21, None), (20, 20)])
def test_rssi_outside_what_device1_holds_is_no_reading(rssi: int, expected: int | None) -> None:
    event = parse_frame(frame(0x0012, 0, found_params(b"", rssi=rssi)))
    assert isinstance(event, Found)
    assert event.rssi == expected


def test_scan_response_flag() -> None:
    event = parse_frame(frame(0x0012, 0, found_params(b"", flags=mgmt.FLAG_SCAN_RESPONSE)))
    assert isinstance(event, Found)
    assert event.scan_response


def test_links_come_and_go() -> None:
    connected = parse_frame(frame(0x000B, 0, ADDRESS + struct.pack("<BIH", 1, 0, 2) + b"\x01\x00"))
    assert connected == Connected(0, "AA:BB:CC:DD:EE:01", "public")
    gone = parse_frame(frame(0x000C, 0, ADDRESS + bytes([2, 0x13])))
    assert gone == Disconnected(0, "AA:BB:CC:DD:EE:01", "random", 0x13)
    assert isinstance(gone, Disconnected)
    assert gone.path == "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01"


def test_other_events_are_not_malformed() -> None:
    assert parse_frame(frame(0x0013, 0, b"\x06\x01")) == Other(0x0013)  # Discovering


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than its header"),
        (b"\x12\x00\x00", "shorter than its header"),
        (frame(0x0012, 0, found_params(b""))[:-1], "says 14 parameter bytes, carries 13"),
        (frame(0x0012, 0, found_params(b"")) + b"\x00", "says 14 parameter bytes, carries 15"),
        (frame(0x0012, 0, b"\x00" * 5), "Device Found of 5 bytes"),
        (frame(0x0012, 0, found_params(b"\x02\x01\x06")[:-1]), "EIR length 3 in 16 bytes"),
        (frame(0x0012, 0, found_params(b"", address_type=7)), "address type 7"),
        (frame(0x0012, 0, found_params(b"\x00" * 1700)), "1700 bytes of EIR"),
        (frame(0x002F, 0, b"\x01"), "Adv Monitor Device Found of 1 bytes"),
        (frame(0x000B, 0, ADDRESS), "Device Connected of 6 bytes"),
        (frame(0x000B, 0, ADDRESS + struct.pack("<BIH", 1, 0, 5)), "EIR length 5"),
        (frame(0x000C, 0, ADDRESS + b"\x01"), "Device Disconnected of 7 bytes"),
        (frame(0x000C, 0, ADDRESS + b"\x09\x00"), "address type 9"),
    ],
)
def test_bad_frames_are_malformed(data: bytes, why: str) -> None:
    event = parse_frame(data)
    assert isinstance(event, Malformed)
    assert why in event.reason


# --- AD structures ---------------------------------------------------------------


def test_every_ad_type_bluetoothd_reads() -> None:
    eir = b"".join(
        [
            ad(0x01, b"\x06"),
            ad(0x03, bytes.fromhex("0f18 1a18")),
            ad(0x05, bytes.fromhex("78563412")),
            ad(0x07, bytes(range(16))),
            ad(0x09, b"SmartShunt"),
            ad(0x0A, b"\xf8"),
            ad(0x16, bytes.fromhex("0f18 64")),
            ad(0x20, bytes.fromhex("78563412 01")),
            ad(0x21, bytes(range(16)) + b"\x02"),
            ad(0xFF, b"\xe1\x02\x10\x20"),
            ad(0x19, b"\x00\x00"),  # appearance: not read
        ]
    )
    parsed = parse_eir(eir)
    uuid128 = "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert parsed == Advertisement(
        flags=0x06,
        name="SmartShunt",
        name_complete=True,
        tx_power=-8,
        manufacturer_data={VICTRON: b"\x10\x20"},
        service_data={
            BATTERY_UUID: b"\x64",
            "12345678-0000-1000-8000-00805f9b34fb": b"\x01",
            uuid128: b"\x02",
        },
        uuids=(BATTERY_UUID, ESS_UUID, "12345678-0000-1000-8000-00805f9b34fb", uuid128),
    )


def test_short_name_and_padding() -> None:
    parsed = parse_eir(ad(0x08, b"Smart") + b"\x00" * 10)
    assert parsed == Advertisement(name="Smart", name_complete=False)


def test_names_as_bluetoothd_repairs_them() -> None:
    assert mgmt.name_text(b"Ruuvi \x00junk") == "Ruuvi "
    assert mgmt.name_text(b" Bad\xff name") == "Bad"
    assert mgmt.name_text("Café".encode()) == "Café"


def test_tx_power_127_is_none() -> None:
    assert parse_eir(ad(0x0A, b"\x7f")) == Advertisement()


@pytest.mark.parametrize(
    ("eir", "why"),
    [
        (b"\x05\x09ab", "runs past"),
        (ad(0xFF, b"\xe1"), "manufacturer data of 1 bytes"),
        (ad(0x16, b"\x0f"), "service data 0x16 of 1 bytes"),
        (ad(0x21, b"\x00" * 15), "service data 0x21 of 15 bytes"),
        (ad(0x03, b"\x0f\x18\x1a"), "UUID list 0x03 of 3 bytes"),
        (ad(0x0A, b"\x01\x02"), "TX power of 2 bytes"),
    ],
)
def test_bad_ad_structures_are_malformed(eir: bytes, why: str) -> None:
    parsed = parse_eir(eir)
    assert isinstance(parsed, Malformed)
    assert why in parsed.reason


# --- onto Device1 -----------------------------------------------------------------


def report(view: DeviceView, eir: bytes, duplicate: bool = True, rssi: int = -60) -> None:
    """One report onto ``view``, as the service's BlueZ side applies it."""
    event = parse_frame(frame(0x0012, 0, found_params(eir, rssi=rssi)))
    assert isinstance(event, Found)
    parsed = parse_eir(event.eir)
    assert isinstance(parsed, Advertisement)
    view.update(device_changes(view, event, parsed, duplicate))


def new_view() -> DeviceView:
    return DeviceView("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01", "hci0")


def test_a_report_makes_the_view_device1_would() -> None:
    view = new_view()
    report(view, ad(0x09, b"Ruuvi") + ad(0xFF, b"\x99\x04\x05") + ad(0x16, b"\x0f\x18\x50"))
    assert view.address == "AA:BB:CC:DD:EE:01"
    assert view.address_type == "random"
    assert view.rssi == -60
    content = view.content
    assert content.name == "Ruuvi"
    assert content.manufacturer_data == {0x0499: b"\x05"}
    assert content.service_data == {BATTERY_UUID: b"\x50"}
    # Since 5.72 bluetoothd adds service-data UUIDs to UUIDs.
    assert content.service_uuids == (BATTERY_UUID,)


def test_duplicate_data_replaces_per_ad_type_and_keeps_what_a_report_leaves_out() -> None:
    view = new_view()
    report(view, ad(0xFF, b"\xe1\x02\x01") + ad(0xFF, b"\x4c\x00\x02"))
    report(view, ad(0xFF, b"\xe1\x02\x03"))
    assert view.content.manufacturer_data == {VICTRON: b"\x03"}
    report(view, ad(0x09, b"Scan response only"))
    assert view.content.manufacturer_data == {VICTRON: b"\x03"}
    assert view.content.name == "Scan response only"


def test_without_duplicate_data_keys_accumulate() -> None:
    view = new_view()
    report(view, ad(0xFF, b"\xe1\x02\x01"), duplicate=False)
    report(view, ad(0xFF, b"\x4c\x00\x02"), duplicate=False)
    assert view.content.manufacturer_data == {VICTRON: b"\x01", 0x004C: b"\x02"}


def test_uuids_are_added_to_and_names_kept() -> None:
    view = new_view()
    report(view, ad(0x09, b"Complete") + ad(0x03, b"\x0f\x18"))
    report(view, ad(0x08, b"Short") + ad(0x03, b"\x1a\x18"))
    assert view.content.name == "Complete"  # a short name never replaces a known one
    assert view.content.service_uuids == (BATTERY_UUID, ESS_UUID)
    report(view, ad(0x09, b"Renamed"))
    assert view.content.name == "Renamed"


def test_unavailable_rssi_is_none_and_still_a_report() -> None:
    view = new_view()
    report(view, b"", rssi=127)
    assert view.rssi is None
    assert view.address


def test_the_views_checks_apply() -> None:
    view = new_view()
    with pytest.raises(MalformedData):
        report(view, ad(0x09, b"x" * 250))
    assert view.content.name is None and not view.address  # nothing changed


# --- fuzz -------------------------------------------------------------------------

ad_structures = st.lists(
    st.tuples(
        st.sampled_from([0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x09, 0x0A, 0x16, 0x20, 0x21, 0xFF]),
        st.binary(max_size=40),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([0x000B, 0x000C, 0x0012, 0x002F, 0x0013]),
    params=st.binary(max_size=80),
    trim=st.integers(min_value=-3, max_value=3),
)
def test_no_frame_raises(code: int, params: bytes, trim: int) -> None:
    data = frame(code, 0, params)
    data = data[:trim] if trim < 0 else data + b"\x00" * trim
    event = parse_frame(data)
    if trim:
        assert isinstance(event, Malformed)
    if isinstance(event, Found):
        parsed = parse_eir(event.eir)
        if isinstance(parsed, Advertisement):
            try:
                new_view().update(device_changes(new_view(), event, parsed, True))
            except MalformedData:
                pass


@settings(max_examples=300, deadline=None)
@given(structures=ad_structures, tail=st.binary(max_size=4))
def test_any_eir_parses_or_is_malformed(structures: list[tuple[int, bytes]], tail: bytes) -> None:
    eir = b"".join(ad(kind, data) for kind, data in structures) + tail
    parsed = parse_eir(eir)
    assert isinstance(parsed, Advertisement | Malformed)


@settings(max_examples=200, deadline=None)
@given(
    company=st.integers(min_value=0, max_value=0xFFFF),
    payload=st.binary(max_size=24),
    name=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        min_size=1,
        max_size=20,
    ),
    uuid16=st.integers(min_value=0, max_value=0xFFFF),
    data=st.binary(max_size=8),
)
def test_round_trip(company: int, payload: bytes, name: str, uuid16: int, data: bytes) -> None:
    """What is encoded into AD structures comes out of a view unchanged."""
    raw_name = name.encode()
    eir = (
        ad(0xFF, company.to_bytes(2, "little") + payload)
        + ad(0x09, raw_name)
        + ad(0x16, uuid16.to_bytes(2, "little") + data)
    )
    view = new_view()
    report(view, eir)
    uuid = f"{uuid16:08x}-0000-1000-8000-00805f9b34fb"
    assert view.content.manufacturer_data == {company: payload}
    assert view.content.name == name
    assert view.content.service_data == {uuid: data}
    assert view.content.service_uuids == (uuid,)


# --- the definitions the report path is held to: the Device1 change, the parser as it was


def device_changes(
    view: DeviceView,
    found: Found,
    ad: Advertisement,
    duplicate: bool,
    service_data_uuids: bool = True,
) -> dict[str, Any]:
    """What bluetoothd would change on the report's Device1, as ``unwrap_device`` gives it.

    ``view`` is the device as we hold it (new and empty for an unknown one).
    bluetoothd keeps manufacturer and service data per key, clearing them
    first when the discovery filter asks for ``DuplicateData`` (``duplicate``;
    ``bt_ad_add_*_data``); adds advertised UUIDs, and since 5.72 those of
    service data (``service_data_uuids``), to UUIDs; takes a complete name
    always and a short one only while it knows none. Every report sets
    RSSI, so every report is one (filtered discovery emits RSSI each time).
    """
    content = view.content
    changes: dict[str, Any] = {"RSSI": rssi_value(found)}
    # Checked once per device, not per report: the view holds them already.
    if found.address != view.address:
        changes["Address"] = found.address
    if found.address_type != view.address_type:
        changes["AddressType"] = found.address_type
    if ad.name is not None and (ad.name_complete or content.name is None):
        changes["Name"] = ad.name
    if ad.tx_power is not None:
        changes["TxPower"] = ad.tx_power
    if ad.manufacturer_data:
        merged_mfr = {} if duplicate else dict(content.manufacturer_data)
        merged_mfr.update(ad.manufacturer_data)
        changes["ManufacturerData"] = merged_mfr
    if ad.service_data:
        merged_sd = {} if duplicate else dict(content.service_data)
        merged_sd.update(ad.service_data)
        changes["ServiceData"] = merged_sd
    added = ad.uuids + (tuple(ad.service_data) if ad.service_data and service_data_uuids else ())
    if added and not set(added).issubset(content.service_uuids):
        changes["UUIDs"] = (*content.service_uuids, *added)
    return changes


def parse_eir_as_before(eir: bytes) -> Advertisement | Malformed:
    """parse_eir as it was written before it was made fast: the oracle for the new one."""
    flags = name = tx_power = mfr = sd = None
    complete, uuids, i, end = False, [], 0, len(eir)
    while i < end:
        length = eir[i]
        if length == 0:
            break
        if i + 1 + length > end:
            return Malformed(f"AD structure of {length} bytes at {i} runs past {end}")
        kind, data = eir[i + 1], eir[i + 2 : i + 1 + length]
        i += 1 + length
        if kind == 0x01:
            flags = data[0] if data else flags
        elif kind in (0x08, 0x09):
            raw = data.split(b"\0", 1)[0]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw[: exc.start].decode("utf-8").strip(" \t\n\r\f\v")
            if text:
                name, complete = text, kind == 0x09
        elif kind == 0xFF:
            if len(data) < 2:
                return Malformed(f"manufacturer data of {len(data)} bytes")
            mfr = mfr or {}
            mfr[int.from_bytes(data[:2], "little")] = data[2:]
        elif kind in (0x16, 0x20, 0x21):
            width = {0x16: 2, 0x20: 4, 0x21: 16}[kind]
            if len(data) < width:
                return Malformed(f"service data 0x{kind:02X} of {len(data)} bytes")
            sd = sd or {}
            sd[uuid_as_before(data[:width])] = data[width:]
        elif kind in (0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            width = {0x02: 2, 0x03: 2, 0x04: 4, 0x05: 4, 0x06: 16, 0x07: 16}[kind]
            if len(data) % width:
                return Malformed(f"UUID list 0x{kind:02X} of {len(data)} bytes")
            uuids.extend(uuid_as_before(data[j : j + width]) for j in range(0, len(data), width))
        elif kind == 0x0A:
            if len(data) != 1:
                return Malformed(f"TX power of {len(data)} bytes")
            value = int.from_bytes(data, "little", signed=True)
            tx_power = None if value == 127 else value
    return Advertisement(flags, name, complete, tx_power, mfr, sd, tuple(uuids))


def uuid_as_before(raw: bytes) -> str:
    if len(raw) != 16:
        return f"{int.from_bytes(raw, 'little'):08x}-0000-1000-8000-00805f9b34fb"
    h = raw[::-1].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Few keys, so that reports of one device share and replace them.
COMPANIES = st.sampled_from([0x02E1, 0x0499, 0x004C, 0xFFFF])
UUID16S = st.sampled_from([0x180F, 0x181A, 0xFCD2])
UUIDS16 = UUID16S.map(lambda u: u.to_bytes(2, "little"))
# Service data keys: 16-, 32- and 128-bit, the second 0x180F again in 32 bits.
uuid_bytes = st.sampled_from([b"\x0f\x18", b"\x0f\x18\x00\x00", b"\x1a\x18", bytes(range(16))])
names = st.one_of(
    st.sampled_from(
        [b"Ruuvi", b"Env 1", b"", b"Bad\xff name", b" Caf\xc3\xa9\x00junk", b"x" * 250]
    ),
    st.binary(max_size=12),
)
structure = st.one_of(
    st.tuples(
        st.just(0xFF),
        st.tuples(COMPANIES, st.binary(max_size=6)).map(
            lambda cp: cp[0].to_bytes(2, "little") + cp[1]
        ),
    ),
    st.tuples(uuid_bytes, st.binary(max_size=4)).map(
        lambda up: ({2: 0x16, 4: 0x20, 16: 0x21}[len(up[0])], up[0] + up[1])
    ),
    st.tuples(st.sampled_from([0x08, 0x09]), names),
    st.tuples(st.just(0x03), st.lists(UUIDS16, max_size=4).map(b"".join)),
    # Enough 16-bit UUIDs, with the view's, to pass the view's limit of 64.
    st.tuples(
        st.just(0x02),
        st.integers(0, 80).map(
            lambda n: b"".join((0x2A00 + k).to_bytes(2, "little") for k in range(n))
        ),
    ),
    st.tuples(
        st.just(0x07), st.lists(st.sampled_from([bytes(range(16))]), max_size=2).map(b"".join)
    ),
    st.tuples(st.just(0x0A), st.sampled_from([b"\x7f", b"\x80", b"\xf8", b"\x14"])),
    st.tuples(st.just(0x01), st.sampled_from([b"\x06", b""])),
)
# Too short for its type: Malformed.
too_short = st.tuples(st.sampled_from([0xFF, 0x16, 0x21, 0x03, 0x0A]), st.binary(max_size=1))


@st.composite
def eirs(draw: st.DrawFn) -> bytes:
    """An advertisement; about one in five has a structure too short for its type, or one
    that runs past the end (3 of 0..4: hypothesis draws the bounds far more often)."""
    structures = draw(st.lists(structure, max_size=6))
    tail = b""
    if draw(st.integers(0, 4)) == 3:
        if draw(st.booleans()):
            structures.insert(draw(st.integers(0, len(structures))), draw(too_short))
        else:
            tail = b"\x05\x09ab"
    eir = b"".join(bytes([len(data) + 1, kind]) + data[:253] for kind, data in structures)
    return eir + tail + draw(st.sampled_from([b"", b"\x00\x00"]))  # legacy padding


@settings(max_examples=500, deadline=None)
@given(eir=eirs())
def test_parse_eir_reads_as_before(eir: bytes) -> None:
    assert parse_eir(eir) == parse_eir_as_before(eir)
    assert parse_eir(eir) == parse_eir_as_before(eir)  # from what it remembered


def test_remembered_texts_stay_bounded() -> None:
    for n in range(3 * mgmt._MEMO_LIMIT):
        raw = n.to_bytes(6, "little")
        assert mgmt.address_text(raw) == raw[::-1].hex(":").upper()
        assert mgmt.uuid_text(raw[:2] + b"\x01\x00") == uuid_as_before(raw[:2] + b"\x01\x00")
        assert mgmt.device_path(n % 3, "AA:BB:CC:DD:EE:01").startswith(f"/org/bluez/hci{n % 3}/")
    assert len(mgmt._addresses) <= mgmt._MEMO_LIMIT
    assert len(mgmt._uuids) <= mgmt._MEMO_LIMIT
