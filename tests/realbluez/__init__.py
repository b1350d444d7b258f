"""Real-BlueZ tier: Debian's bluetoothd in a QEMU guest, bridged to a host test bus."""
