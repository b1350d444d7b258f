"""The scanner's core: what every report passes through, with no D-Bus and no BlueZ.

The data path the client shares (``identifiers``, ``record``, ``filters``) and
the service's centre (``cache``, ``presence``, ``emission``, ``subscriptions``,
``leases``, ``loadcap``, ``loadguard``, ``hub``, ``state``, ``statefile``, and
``timer``, the hub's one timer). Nothing here imports ``bluez/``, ``venus/``, ``config`` or the
service; ``tests/unit/test_imports.py`` holds that true.
"""
