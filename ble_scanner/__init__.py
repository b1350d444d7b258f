"""dbus-ble-scanner: the one process that owns BLE discovery on a Venus OS device."""

__version__ = "0.1.0"
