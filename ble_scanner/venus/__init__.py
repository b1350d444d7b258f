"""Venus OS integration: the BusItem tree, the localsettings client and a localsettings stand-in.

These modules own their D-Bus I/O and know nothing of BlueZ or the scanner core;
the service wires them in (notes/venus.md has the protocol facts they follow).
"""
