#!/usr/bin/env python3
"""Entry point started by service/run: puts ext/ on sys.path as Venus services do."""

import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(1, os.path.join(_HERE, "ext"))

from ble_scanner.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
