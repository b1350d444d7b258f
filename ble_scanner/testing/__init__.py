"""Test doubles: the BlueZ simulator, a private system-like bus, a localsettings
stand-in, and the demo that puts them together.

Nothing here ships: the bundle for a GX drops this folder whole, and a test
checks that nothing left in the bundle imports it.
"""
