"""The settings table in markdown, written into (or checked against) a document.

``python -m ble_scanner.config --markdown`` prints it; ``--update PATH``
rewrites the block between the markers in PATH; ``--check PATH`` fails if that
block is out of date.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

from .checks import default_text, range_text
from .table import PROCESS_OPTIONS, SETTINGS, Kind, Setting

README_BEGIN: Final = "<!-- settings-table:begin -->"
README_END: Final = "<!-- settings-table:end -->"


_TYPE_TEXT: Final = {
    Kind.SECONDS: "float",
    Kind.NUMBER: "float",
    Kind.INTEGER: "int",
    Kind.CHOICE: "string",
    Kind.LIST: "list",
    Kind.TEXT: "string",
    Kind.FLAG: "int 0/1",
}


def _type_text(setting: Setting) -> str:
    if setting.kind is Kind.FLAG and setting.name is None:
        return "switch"
    if setting.kind is Kind.LIST and setting.name is not None:
        return "string, comma separated"
    kind = _TYPE_TEXT[setting.kind]
    return f"{kind} ({setting.unit})" if setting.unit else kind


def markdown() -> str:
    """The settings table of docs/settings.md, with why each range is what it is."""
    rows = [
        "| Setting | Option | Type | Default | Range | Applied | Meaning | Why this range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        name = f"`{setting.name}`" if setting.name else "—"
        option = "—"
        if setting.flag is not None:
            metavar = setting.metavar or "|".join(setting.choices)
            option = (
                f"`{setting.flag}`" if setting.kind is Kind.FLAG else f"`{setting.flag} {metavar}`"
            )
            if setting.kind is Kind.LIST:
                option += " (repeatable)"
        cells = (
            name,
            option,
            _type_text(setting),
            setting.default_text or f"`{default_text(setting)}`",
            range_text(setting),
            "live" if setting.live else "at start",
            setting.help,
            setting.why,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    """``readme`` (any markdown document) with the text between the settings-table
    markers replaced by ``table``; ValueError if it has no such block."""
    head, begin, rest = readme.partition(README_BEGIN + "\n")
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"the README has no {README_BEGIN} ... {README_END} block")
    return head + begin + table + end + tail


def table_is_current(path: str) -> bool:
    """True if the markdown file at ``path`` holds today's table between the markers.

    Raises OSError if it cannot be read, ValueError if it has no markers.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return readme_with_table(text, markdown()) == text


def write_table(path: str) -> None:
    """Rewrite the table between the markers in the markdown file at ``path``."""
    with open(path, encoding="utf-8") as f:
        text = readme_with_table(f.read(), markdown())  # ValueError before any write
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ble_scanner.config",
        description="The settings table, for a markdown document (between "
        f"{README_BEGIN} and {README_END}).",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table")
    parser.add_argument(
        "--update",
        "--update-readme",
        dest="update",
        metavar="PATH",
        help="rewrite the table between the markers in PATH",
    )
    parser.add_argument(
        "--check", metavar="PATH", help="exit 1 if the table in PATH is out of date"
    )
    args = parser.parse_args(argv)
    try:
        if args.update:
            write_table(args.update)
            return 0
        if args.check:
            if table_is_current(args.check):
                return 0
            print(
                f"{args.check}: the settings table is out of date; "
                f"run: python -m ble_scanner.config --update {args.check}",
                file=sys.stderr,
            )
            return 1
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    parser.print_help()
    return 0
