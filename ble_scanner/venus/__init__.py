"""Venus OS integration: the BusItem tree, the localsettings client and a localsettings stand-in.

These modules own their D-Bus I/O and know nothing of BlueZ or the scanner core;
the service wires them in. The protocols they follow are those of Victron's
velib_python ``vedbus.py`` (BusItem) and localsettings ``localsettings.py``.
"""
