"""docs/architecture.md's Layout section stays true: every module and package under ble_scanner/
is listed there, one line each with its side of the bus, and nothing listed is gone.

The Layout is the first fenced block under ``## Layout``: one entry per line, the
path first (a folder ends in ``/``), nested two spaces per level below its folder,
then for entries inside ``ble_scanner/`` the side (one of ``SIDES``), then what it
is for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = "ble_scanner/"
# service: runs in the scanner process; client: in a program using it; shared:
# both; tests: test doubles, which the bundle leaves out.
SIDES = frozenset({"service", "client", "shared", "tests"})
# The folders a reader of the top level looks for (docs/architecture.md's Layout).
TOP_LEVEL = ("ble_scanner/", "tests/", "tools/", "service/", "ext/", "docs/", ".ci/")
INDENT = 2
# Folders whose modules are listed in their package docstring's "Modules"
# section instead of the Layout (the simulator: a test double with its own manual).
SELF_DOCUMENTED = ("ble_scanner/testing/simulator/",)
_FENCE = re.compile(r"^```")


class LayoutError(AssertionError):
    """The Layout block cannot be read; says which line and why."""


@dataclass(frozen=True, slots=True)
class Entry:
    path: str  # from the repository root; a folder ends in "/"
    side: str | None
    line: int  # in docs/architecture.md


def layout_block(text: str) -> tuple[list[str], int]:
    """The lines of the first fenced block under ``## Layout``, and the line number of the first."""
    lines = text.splitlines()
    try:
        start = lines.index("## Layout")
    except ValueError:
        raise LayoutError("docs/architecture.md has no '## Layout' section") from None
    opened: int | None = None
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.startswith("## "):
            break
        if _FENCE.match(line):
            if opened is None:
                opened = number
            else:
                return lines[opened : number - 1], opened + 1
    raise LayoutError("docs/architecture.md's Layout section has no complete ``` block")


def parse_layout(lines: list[str], first_line: int) -> list[Entry]:
    """Entries with full paths, from indentation; a bad indent is a LayoutError naming the line."""
    entries: list[Entry] = []
    folders: list[tuple[int, str]] = []  # (indent, path) of the open folders, outermost first
    for number, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        while folders and folders[-1][0] >= indent:
            folders.pop()
        expected = folders[-1][0] + INDENT if folders else 0
        if indent != expected:
            raise LayoutError(
                f"docs/architecture.md line {number}: indented {indent} spaces, expected {expected} "
                f"({INDENT} per level below its folder): {line.strip()!r}"
            )
        name, *rest = line.split()
        path = (folders[-1][1] if folders else "") + name
        side = rest[0] if rest and rest[0] in SIDES else None
        entries.append(Entry(path, side, number))
        if name.endswith("/"):
            folders.append((indent, path))
    return entries


def doc_layout() -> list[Entry]:
    return parse_layout(*layout_block(DOC.read_text(encoding="utf-8")))


def package_modules() -> set[str]:
    """Every module (``*.py`` but ``__init__.py``) and every folder holding one, under the package."""
    found: set[str] = set()
    for path in (ROOT / PACKAGE).rglob("*.py"):
        relative = path.relative_to(ROOT)
        if any(part.startswith((".", "__pycache__")) for part in relative.parts):
            continue
        if relative.as_posix().startswith(SELF_DOCUMENTED):
            continue
        if path.name != "__init__.py":
            found.add(relative.as_posix())
        for folder in relative.parents[:-2]:  # up to, not including, ble_scanner/ itself
            found.add(folder.as_posix() + "/")
    found.update(SELF_DOCUMENTED)
    return found


def docstring_modules(folder: str) -> set[str]:
    """The ``name.py`` entries of the "Modules" section of a package's docstring."""
    text = (ROOT / folder / "__init__.py").read_text(encoding="utf-8")
    section = text.split("Modules\n-------\n", 1)
    if len(section) != 2:
        raise LayoutError(f"{folder}__init__.py has no 'Modules' section in its docstring")
    body = section[1].split("\n\n\n", 1)[0].split("\n\n", 2)
    listing = body[0] if body[0].strip() else body[1]
    return set(re.findall(r"^- ``([\w.]+\.py)``", listing, re.M))


@pytest.mark.parametrize("folder", SELF_DOCUMENTED)
def test_a_self_documented_package_lists_each_of_its_modules_in_its_docstring(
    folder: str,
) -> None:
    present = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
    listed = docstring_modules(folder)
    assert listed == present, (
        f"{folder}__init__.py's Modules section: missing {sorted(present - listed)}, "
        f"gone {sorted(listed - present)}"
    )


def test_layout_lists_every_module_and_package_under_ble_scanner() -> None:
    listed = {entry.path for entry in doc_layout()}
    missing = sorted(package_modules() - listed)
    assert not missing, (
        "not in docs/architecture.md's Layout section (add one line each, under its folder, "
        "with its side and what it is for): " + ", ".join(missing)
    )


def test_layout_lists_nothing_that_does_not_exist() -> None:
    gone = [
        f"{entry.path} (docs/architecture.md line {entry.line})"
        for entry in doc_layout()
        if not (
            (ROOT / entry.path).is_dir()
            if entry.path.endswith("/")
            else (ROOT / entry.path).is_file()
        )
    ]
    assert not gone, (
        "listed in docs/architecture.md's Layout section but not in the repository "
        "(remove the line or fix the path): " + ", ".join(gone)
    )


def test_layout_lists_each_path_once() -> None:
    seen: dict[str, int] = {}
    twice = []
    for entry in doc_layout():
        if entry.path in seen:
            twice.append(
                f"{entry.path} (docs/architecture.md lines {seen[entry.path]} and {entry.line})"
            )
        seen.setdefault(entry.path, entry.line)
    assert not twice, "listed twice in docs/architecture.md's Layout section: " + ", ".join(twice)


def test_every_entry_in_the_package_says_which_side_of_the_bus_it_is_on() -> None:
    unsided = [
        f"{entry.path} (docs/architecture.md line {entry.line})"
        for entry in doc_layout()
        if entry.path.startswith(PACKAGE) and entry.path != PACKAGE and entry.side is None
    ]
    assert not unsided, (
        f"no side ({', '.join(sorted(SIDES))}) after the path in docs/architecture.md's Layout: "
        + ", ".join(unsided)
    )


def test_layout_names_the_top_level_folders() -> None:
    listed = {entry.path for entry in doc_layout()}
    missing = [folder for folder in TOP_LEVEL if folder not in listed]
    assert not missing, (
        "top-level folders missing from docs/architecture.md's Layout: " + ", ".join(missing)
    )


def test_parser_nests_by_indentation_and_reads_the_side() -> None:
    block = [
        "run.py          the entry point",
        "pkg/            the package",
        "  core.py       service  pure logic",
        "  sub/          client   a subpackage",
        "    leaf.py     client   a module in it",
        "  other.py      shared   back one level",
        "tests/          the tests",
    ]
    assert parse_layout(block, 10) == [
        Entry("run.py", None, 10),
        Entry("pkg/", None, 11),
        Entry("pkg/core.py", "service", 12),
        Entry("pkg/sub/", "client", 13),
        Entry("pkg/sub/leaf.py", "client", 14),
        Entry("pkg/other.py", "shared", 15),
        Entry("tests/", None, 16),
    ]


def test_parser_refuses_an_entry_off_the_two_space_grid() -> None:
    block = ["pkg/      the package", "  a.py    service  fine", "     b.py  service  odd"]
    with pytest.raises(
        LayoutError, match=r"docs/architecture.md line 3: indented 5 spaces, expected 2"
    ):
        parse_layout(block, 1)


def test_a_readme_without_a_layout_block_is_reported() -> None:
    with pytest.raises(LayoutError, match="no complete ``` block"):
        layout_block("# x\n\n## Layout\n\nprose only\n\n## Next\n")
