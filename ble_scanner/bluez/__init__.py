"""The BlueZ side: ``objects`` follows bluetoothd on the bus (its adapters and devices),
``discovery`` is one adapter's discovery state machine (pure), ``adapter`` runs it
and makes its calls, ``monitors`` is our AdvertisementMonitor1 application; the
silence watchdog (``watchdog``) and the bt-claims convention (``claims``,
``claimsdir``) are only this side's."""
