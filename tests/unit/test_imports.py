"""Which side imports what (docs/architecture.md "Layout"), read from the source with ast.

The core (``ble_scanner/core/``) is the data path and the service's centre: it
imports nothing of BlueZ, Venus, the settings table or the D-Bus service, so it
can be read and tested alone. The client shares only the data path with the
service. ``modes.py`` and ``tasks.py`` import nothing of the package, so every
side may use them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ble_scanner"

# The core's modules the client may import: what a report, a filter and an item's
# changed keys are.
SHARED_DATA_PATH = frozenset(
    {
        "ble_scanner.core.identifiers",
        "ble_scanner.core.record",
        "ble_scanner.core.filters",
        "ble_scanner.core.delta",
    }
)
SERVICE_SIDE = (
    "ble_scanner.config",
    "ble_scanner.main",
    "ble_scanner.service",
    "ble_scanner.signals",
)
# Modules with no imports from the package, which every side may use.
STANDALONE = ("ble_scanner.modes", "ble_scanner.tasks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute; ``from p import m`` counts ``p.m`` if it is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                as_path = ROOT / Path(*candidate.split("."))
                if as_path.with_suffix(".py").is_file() or as_path.is_dir():
                    found.add(candidate)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.glob("*.py"))


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module_name(path)} imports {imported}"
        for path in modules_under(folder)
        for imported in sorted(imports_of(path))
        if within(imported, *forbidden)
    ]


def test_the_core_imports_nothing_of_bluez_venus_settings_or_the_service() -> None:
    forbidden = ("ble_scanner.bluez", "ble_scanner.venus", "ble_scanner.bus", "ble_scanner.client")
    assert not offending("core", forbidden + SERVICE_SIDE + ("ble_scanner.testing",))


def test_the_data_path_the_client_shares_imports_only_constants_and_itself() -> None:
    for name in sorted(SHARED_DATA_PATH):
        path = ROOT / Path(*name.split(".")).with_suffix(".py")
        ours = {i for i in imports_of(path) if within(i, "ble_scanner")}
        assert ours <= SHARED_DATA_PATH | {"ble_scanner.const", "ble_scanner.core"}, (name, ours)


def test_the_client_imports_nothing_of_the_service_side() -> None:
    allowed = SHARED_DATA_PATH | {
        "ble_scanner",
        "ble_scanner.const",
        "ble_scanner.core",
        *STANDALONE,
    }
    wrong = [
        f"{module_name(path)} imports {imported}"
        for path in modules_under("client")
        for imported in sorted(imports_of(path))
        if within(imported, "ble_scanner")
        and imported not in allowed
        and not within(
            imported, "ble_scanner.client", "ble_scanner.bus.calls", "ble_scanner.bus.owner"
        )
    ]
    assert not wrong


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("bluez", ("ble_scanner.venus", "ble_scanner.client", *SERVICE_SIDE)),
        ("venus", ("ble_scanner.bluez", "ble_scanner.client", "ble_scanner.main")),
        ("bus", ("ble_scanner.bluez", "ble_scanner.venus", "ble_scanner.client", *SERVICE_SIDE)),
    ],
)
def test_each_side_of_the_service_keeps_to_itself(folder: str, forbidden: tuple[str, ...]) -> None:
    assert not offending(folder, forbidden)


@pytest.mark.parametrize("module", STANDALONE)
def test_a_standalone_module_imports_nothing_of_the_package(module: str) -> None:
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert not [i for i in imports_of(path) if within(i, "ble_scanner")]


def test_the_reader_resolves_relative_imports_and_submodules() -> None:
    # A module in the real tree, so the paths resolve: core/hub.py names its neighbours.
    found = imports_of(PACKAGE / "core" / "hub.py")
    assert "ble_scanner.core.cache" in found and "ble_scanner.const" in found
    assert "ble_scanner.core.statefile" in imports_of(PACKAGE / "main.py")


# What makes a unit test file not pure (the Makefile's PURE_UNITS, which the
# suite on dbus-fast 2.21.1 leaves out): these words anywhere in it.
NOT_PURE_WORDS = ("dbus_fast", "wire_cost", "ble_scanner.service", "ble_scanner.main")


def test_the_units_left_out_on_dbus_fast_2_21_use_no_module_that_imports_dbus_fast() -> None:
    """A pure unit, run on the newest dbus-fast only, tests nothing that could differ
    on 2.21.1: no package module it imports itself imports dbus-fast."""
    pure = [
        path
        for path in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if not any(word in path.read_text(encoding="utf-8") for word in NOT_PURE_WORDS)
    ]
    assert pure, "the rule leaves out nothing: is the Makefile's PURE_UNITS still used?"
    wrong = [
        f"{path.name} uses {imported}"
        for path in pure
        for imported in sorted(imports_of(path))
        if within(imported, "ble_scanner")
        and (source := ROOT / Path(*imported.split(".")).with_suffix(".py")).is_file()
        and any(within(i, "dbus_fast") for i in imports_of(source))
    ]
    assert not wrong


def test_the_makefile_leaves_out_exactly_these_words() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = makefile.split("PURE_UNITS := ", 1)[1].split("tests/unit/test_*.py", 1)[0]
    assert sorted(re.findall(r"-e (\S+)", rule)) == sorted(NOT_PURE_WORDS)
