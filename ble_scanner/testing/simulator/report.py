"""One advertising report as the controller hands it to bluetoothd."""

from __future__ import annotations

from dataclasses import dataclass, field

from .uuids import short_uuid, uuid128

# AD types (Bluetooth Assigned Numbers 2.3).
AD_FLAGS = 0x01
AD_UUID16_ALL = 0x03
AD_UUID32_ALL = 0x05
AD_UUID128_ALL = 0x07
AD_NAME_COMPLETE = 0x09
AD_TX_POWER = 0x0A
AD_SERVICE_DATA16 = 0x16
AD_SERVICE_DATA32 = 0x20
AD_SERVICE_DATA128 = 0x21
AD_MANUFACTURER = 0xFF


@dataclass(slots=True)
class Report:
    """Parsed advertisement; UUIDs are 128-bit lower case, absent fields are None/empty."""

    address: str
    address_type: str = "public"
    rssi: int = -60
    name: str | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()
    tx_power: int | None = None
    flags: int | None = 0x06
    connectable: bool = True
    scan_response: bool = False
    # The AD data as sent on the management channel (mgmt.report_eir), built on
    # first use; a Report is not changed once advertised. Not copied by replace().
    eir_cache: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        address: str,
        *,
        address_type: str = "public",
        rssi: int = -60,
        name: str | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        service_data: dict[str, bytes] | None = None,
        service_uuids: list[str] | tuple[str, ...] | None = None,
        tx_power: int | None = None,
        flags: int | None = 0x06,
        connectable: bool = True,
        scan_response: bool = False,
    ) -> Report:
        """Normalise caller input (UUID spellings, address case)."""
        return cls(
            address.upper(),
            address_type,
            rssi,
            name,
            dict(manufacturer_data) if manufacturer_data else {},
            {uuid128(k): bytes(v) for k, v in service_data.items()} if service_data else {},
            tuple(uuid128(u) for u in service_uuids) if service_uuids else (),
            tx_power,
            flags,
            connectable,
            scan_response,
        )

    def all_uuids(self) -> tuple[str, ...]:
        """Advertised service UUIDs plus service-data UUIDs (BlueZ adds both to UUIDs)."""
        if not self.service_data:
            return self.service_uuids
        extra = tuple(u for u in self.service_data if u not in self.service_uuids)
        return self.service_uuids + extra

    def ad_structures(self) -> list[tuple[int, bytes]]:
        """The AD structures this report would carry on air, for monitor patterns."""
        ads: list[tuple[int, bytes]] = []
        if self.flags is not None:
            ads.append((AD_FLAGS, bytes([self.flags & 0xFF])))
        u16: list[bytes] = []
        u32: list[bytes] = []
        u128: list[bytes] = []
        for uuid in self.service_uuids:
            short = short_uuid(uuid)
            if short is not None and short <= 0xFFFF:
                u16.append(short.to_bytes(2, "little"))
            elif short is not None:
                u32.append(short.to_bytes(4, "little"))
            else:
                u128.append(bytes.fromhex(uuid.replace("-", ""))[::-1])
        for ad_type, parts in ((AD_UUID16_ALL, u16), (AD_UUID32_ALL, u32), (AD_UUID128_ALL, u128)):
            if parts:
                ads.append((ad_type, b"".join(parts)))
        if self.name is not None:
            ads.append((AD_NAME_COMPLETE, self.name.encode()))
        if self.tx_power is not None:
            ads.append((AD_TX_POWER, (self.tx_power & 0xFF).to_bytes(1, "little")))
        for uuid, data in self.service_data.items():
            short = short_uuid(uuid)
            if short is not None and short <= 0xFFFF:
                ads.append((AD_SERVICE_DATA16, short.to_bytes(2, "little") + data))
            elif short is not None:
                ads.append((AD_SERVICE_DATA32, short.to_bytes(4, "little") + data))
            else:
                raw = bytes.fromhex(uuid.replace("-", ""))[::-1]
                ads.append((AD_SERVICE_DATA128, raw + data))
        for company, payload in self.manufacturer_data.items():
            ads.append((AD_MANUFACTURER, company.to_bytes(2, "little") + payload))
        return ads
