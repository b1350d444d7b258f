"""The BlueZ side: bluetoothd's objects as we follow them, each adapter's discovery,
and the advertisement monitors used for passive scanning."""
