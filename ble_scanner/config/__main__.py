"""``python -m ble_scanner.config``: the settings table in markdown (see ``markdown``)."""

import sys

from .markdown import main

if __name__ == "__main__":
    sys.exit(main())
