"""The bt-claims convention 0.4 as rules, on an injected clock: which claims count."""

from __future__ import annotations

from ble_scanner.bluez import claims
from ble_scanner.bluez.claims import LIVE_FOR, Claim, Kind

NOW = 1_764_400_000.0
OURS, THEIRS = 100, 200


def claim(name: str, pid: int = THEIRS, age: float = 0.0, service: str = "svc") -> Claim:
    parsed = claims.parse_name(name)
    assert parsed is not None
    return Claim(name, parsed[0], parsed[1], pid, service, NOW - age)


def test_an_adapter_s_key_is_its_address_without_colons_in_upper_case() -> None:
    assert claims.adapter_key("aa:bb:cc:dd:ee:0f") == "AABBCCDDEE0F"
    assert claims.keys_for("aa:bb:cc:dd:ee:0f", "hci1") == ("AABBCCDDEE0F", "hci1")
    assert claims.keys_for("", "hci1") == ("hci1",), "no address: the 0.3 name alone"


def test_names_of_every_kind_are_read_and_others_are_not_claims() -> None:
    assert claims.parse_name("AABBCCDDEEFF.link.0") == ("AABBCCDDEEFF", Kind.LINK)
    assert claims.parse_name("AABBCCDDEEFF.use.serialbattery.2") == ("AABBCCDDEEFF", Kind.USE)
    assert claims.parse_name("hci0.scan") == ("hci0", Kind.SCAN)
    assert claims.parse_name("hci0.drain") == ("hci0", Kind.DRAIN)
    for name in ("hci0", "hci0.lock", ".drain", "AABBCCDDEEFF.drained", "README"):
        assert claims.parse_name(name) is None, name


def test_the_content_line_round_trips_and_garbage_is_no_claim() -> None:
    line = claims.content(812, "dbus-serialbattery", NOW + 0.7)
    assert line == f"812 dbus-serialbattery {int(NOW)}\n"
    assert claims.parse_content(line) == (812, "dbus-serialbattery")
    for text in ("", "812", "x svc 1", "-1 svc 1", "0 svc 1"):
        assert claims.parse_content(text) is None, text


def test_live_needs_a_running_holder_and_a_recent_touch() -> None:
    fresh, old = claim("hci0.link.0"), claim("hci0.link.0", age=LIVE_FOR + 1)
    assert claims.is_live(fresh, NOW, pid_alive=True)
    assert claims.is_live(claim("hci0.link.0", age=LIVE_FOR), NOW, pid_alive=True)
    assert not claims.is_live(old, NOW, pid_alive=True), "a stalled holder holds nothing"
    assert not claims.is_live(fresh, NOW, pid_alive=False), "a dead holder holds nothing"


def test_only_a_dead_holder_s_old_file_is_stale() -> None:
    old = claim("hci0.link.0", age=LIVE_FOR + 1)
    assert claims.is_stale(old, NOW, pid_alive=False)
    assert not claims.is_stale(old, NOW, pid_alive=True)
    assert not claims.is_stale(claim("hci0.link.0"), NOW, pid_alive=False)


def test_live_claims_are_filtered_with_the_pid_check_given() -> None:
    found = [
        claim("K.use.b", pid=201),
        claim("K.link.0", pid=202),
        claim("K.link.1", pid=203, age=LIVE_FOR * 2),
    ]
    live = claims.live_claims(found, NOW, lambda pid: pid != 202)
    assert [c.name for c in live] == ["K.use.b"]


def test_other_owners_links_and_uses_veto_a_reset_and_scans_and_ours_do_not() -> None:
    found = [
        claim("K.scan"),
        claim("K.link.0", pid=OURS),
        claim("K.use.other"),
        claim("K.link.1", service="dbus-serialbattery"),
    ]
    assert [c.name for c in claims.vetoes(found, OURS)] == ["K.use.other", "K.link.1"]
    assert str(claims.vetoes(found, OURS)[1]) == f"dbus-serialbattery pid {THEIRS}"


def test_another_process_s_drain_is_found_and_our_own_is_not() -> None:
    assert claims.other_drain([claim("K.drain", pid=OURS)], OURS) is None
    theirs = claim("K.drain", service="battery-manager")
    assert claims.other_drain([claim("K.link.0"), theirs], OURS) is theirs
