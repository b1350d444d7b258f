"""Every setting of the service, described once, and what is made from that.

- ``table``: the settings table (``SETTINGS``, ``PROCESS_OPTIONS``), one row each.
- ``values``: ``ScannerConfig``, the values the service runs with.
- ``checks``: a value checked (from the command line or localsettings) and stored.
- ``options``: the command line made from the table.
- ``markdown``: the table for the documentation (``python -m ble_scanner.config``).

Callers import from here.
"""

from __future__ import annotations

from .checks import (
    add_settings_definitions,
    default_text,
    from_stored,
    from_text,
    range_text,
    stored,
)
from .markdown import (
    README_BEGIN,
    README_END,
    main,
    markdown,
    readme_with_table,
    table_is_current,
    write_table,
)
from .options import add_options, config_from_args
from .table import (
    BY_FIELD,
    BY_PATH,
    COMPANY_ID_MAX,
    INGESTS,
    PROCESS_OPTIONS,
    SCAN_MODES,
    SETTINGS,
    Kind,
    Setting,
    adapter_name,
    address,
    company_id,
)
from .values import ScannerConfig, Stored, Value, with_values

__all__ = [
    "BY_FIELD",
    "BY_PATH",
    "COMPANY_ID_MAX",
    "INGESTS",
    "PROCESS_OPTIONS",
    "README_BEGIN",
    "README_END",
    "SCAN_MODES",
    "SETTINGS",
    "Kind",
    "ScannerConfig",
    "Setting",
    "Stored",
    "Value",
    "adapter_name",
    "add_options",
    "add_settings_definitions",
    "address",
    "company_id",
    "config_from_args",
    "default_text",
    "from_stored",
    "from_text",
    "main",
    "markdown",
    "range_text",
    "readme_with_table",
    "stored",
    "table_is_current",
    "with_values",
    "write_table",
]
