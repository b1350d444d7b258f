"""bluez/links.py: who is connected, from Device1's Connected and from the channel's events."""

from __future__ import annotations

from dbus_fast import Variant

from ble_scanner.bluez.links import Links

HCI0 = "/org/bluez/hci0"
DEV = f"{HCI0}/dev_C0_11_22_33_44_55"
ADDR = "C0:11:22:33:44:55"


def test_device1_connected_makes_a_link_on_its_adapter_and_disconnected_ends_it() -> None:
    links = Links()
    links.follow(DEV, {"Connected": Variant("b", True), "Address": Variant("s", ADDR)}, [])
    assert links.on(HCI0) == ADDR and links.on("/org/bluez/hci1") is None
    links.follow(DEV, {"Connected": Variant("b", False)}, [])
    assert links.on(HCI0) is None


def test_without_an_address_the_known_one_or_the_path_names_the_link() -> None:
    links = Links()
    links.follow(DEV, {"Connected": Variant("b", True)}, [], known_address=ADDR)
    assert links.on(HCI0) == ADDR
    links.follow(DEV + "x", {"Connected": Variant("b", True)}, [])
    assert links.by_path[DEV + "x"] == "dev_C0_11_22_33_44_55x"


def test_a_malformed_or_invalidated_connected_is_no_link() -> None:
    links = Links()
    links.follow(DEV, {"Connected": Variant("s", "yes")}, [])
    assert len(links) == 0
    links.connected(DEV, ADDR)
    links.follow(DEV, {}, ["Connected"])
    assert len(links) == 0


def test_the_channel_s_events_and_an_adapter_going_away() -> None:
    links = Links()
    links.connected(DEV, ADDR)
    links.connected(DEV, ADDR)  # told twice (Device1 and the channel): one link
    assert len(links) == 1
    links.disconnected(DEV, ADDR)
    assert links.on(HCI0) is None
    links.connected(DEV, ADDR)
    links.drop_under(HCI0)
    assert len(links) == 0
