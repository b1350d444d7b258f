"""The documents stay usable: the README short enough for a GX owner, every
relative link in README.md, CONTRIBUTING.md, CHANGELOG.md, docs/*.md and the
READMEs under tests/ and ext/ leading somewhere (the file, and the heading when
the link names one), and every citation, in documents and in code, something a
reader of the repository can open."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250  # a page a GX owner reads through; the rest lives under docs/
DOCUMENTS = (
    "README.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    "docs/*.md",
    "tests/README.md",
    "tests/*/README.md",
    "ext/README.md",
)

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def documents(root: Path = ROOT) -> list[Path]:
    """The checked documents that exist, in a stable order."""
    found: list[Path] = []
    for pattern in DOCUMENTS:
        found.extend(sorted(root.glob(pattern)))
    return found


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked."""
    lines: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, _CODE_SPAN.sub("``", line)))
    return lines


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of the headings of a Markdown file (outside code blocks)."""
    text = path.read_text(encoding="utf-8")
    ids: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            ids.add(anchor(line.lstrip("#")))
    return ids


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link in ``path`` whose file, or heading, does not exist."""
    broken: list[str] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if _SCHEME.match(target):
                continue
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)} line {number}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{where} (no heading #{fragment} there)")
    return broken


def test_readme_stays_short() -> None:
    count = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, (
        f"README.md has {count} lines, at most {README_MAX_LINES}: it is for GX owners; "
        "move what is for programs or contributors to docs/ or CONTRIBUTING.md"
    )


def test_every_relative_link_leads_somewhere() -> None:
    checked = documents()
    names = {str(path.relative_to(ROOT)) for path in checked}
    assert {"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/settings.md"} <= names
    broken = [link for path in checked for link in broken_links(path)]
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


# What a GX owner cannot open: the product spec, the researchers' notes, the tracker.
_INTERNAL = re.compile(r"SPEC §|notes/\S*\.md|\b[Ii]ssues? \d+|\bvenus#\d+")


def internal_citations(
    path: Path, root: Path = ROOT, pattern: re.Pattern[str] = _INTERNAL
) -> list[str]:
    """Lines of ``path`` that cite what is not in the repository (``pattern``)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [
        f"{path.relative_to(root)} line {number}: {match.group(0)}"
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := pattern.search(line))
    ]


def test_user_documents_cite_only_what_a_reader_can_open() -> None:
    user = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(ROOT.glob("docs/*.md"))]
    found = [hit for path in user for hit in internal_citations(path)]
    assert not found, "internal citations in user documents:\n" + "\n".join(found)


def test_an_internal_citation_is_found(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("fine\nsee SPEC §4.1\nas in issue 15\nfine too\n", encoding="utf-8")
    assert internal_citations(doc, tmp_path) == [
        "README.md line 2: SPEC §",
        "README.md line 3: issue 15",
    ]


# What a reader of the code cannot open: the product spec and the researchers'
# notes, which live outside the repository. Cite the BlueZ, kernel or Victron
# source by path, or the file of this repository that says it.
_UNOPENABLE = re.compile(r"SPEC §|\bnotes/\S*\.md|\bnotes §|/work/shared")
CODE_FOLDERS = ("ble_scanner", "tests", "tools", "service", ".ci")
CODE_FILES = ("dbus_ble_scanner.py", "Makefile")
# This file spells the patterns out, and its fixtures are bad lines on purpose.
_OWN = Path(__file__).resolve()


def code_files(root: Path = ROOT) -> list[Path]:
    """The .py and .sh files, and suffix-less scripts, a reader of the code meets."""
    found = [root / name for name in CODE_FILES if (root / name).is_file()]
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.resolve() == _OWN:
                continue
            if path.suffix in (".py", ".sh") or (
                not path.suffix and path.read_bytes().startswith(b"#!")
            ):
                found.append(path)
    return found


def unopenable_citations(path: Path, root: Path = ROOT) -> list[str]:
    """Lines of ``path`` that cite the spec, the notes or the shared folder."""
    return internal_citations(path, root, _UNOPENABLE)


def test_code_cites_only_what_a_reader_can_open() -> None:
    checked = code_files()
    names = {str(path.relative_to(ROOT)) for path in checked}
    assert {"ble_scanner/const.py", "tools/install.sh", ".ci/run", "Makefile"} <= names
    found = [hit for path in checked for hit in unopenable_citations(path)]
    assert not found, "citations a reader cannot open, in code:\n" + "\n".join(found)


def test_contributor_documents_cite_only_what_a_reader_can_open() -> None:
    found = [hit for path in documents() for hit in unopenable_citations(path)]
    assert not found, "citations a reader cannot open, in documents:\n" + "\n".join(found)


def test_an_unopenable_citation_in_code_is_found(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "x.sh").write_text("#!/bin/sh\n# see tools/common.sh\n", "utf-8")
    (tmp_path / "tools" / "data.txt").write_text("SPEC §1 in data is not code\n", "utf-8")
    (tmp_path / "Makefile").write_text("# limits (SPEC §4.1)\n", encoding="utf-8")
    code = tmp_path / "ble_scanner" / "a.py"
    code.parent.mkdir()
    code.write_text(
        "# fine: BlueZ src/adapter.c\n"
        "# as measured (notes/real-bluez-vm.md)\n"
        "x = 1  # notes §4.3\n"
        '"""See /work/shared/notes/venus.md."""\n'
        "# the footnotes/ folder and SPECIFIC are fine\n",
        encoding="utf-8",
    )
    assert [str(path.relative_to(tmp_path)) for path in code_files(tmp_path)] == [
        "Makefile",
        "ble_scanner/a.py",
        "tools/x.sh",
    ]
    assert unopenable_citations(code, tmp_path) == [
        "ble_scanner/a.py line 2: notes/real-bluez-vm.md",
        "ble_scanner/a.py line 3: notes §",
        "ble_scanner/a.py line 4: /work/shared",
    ]
    assert unopenable_citations(tmp_path / "Makefile", tmp_path) == ["Makefile line 1: SPEC §"]


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some `code` here\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#some-code-here) [web](https://example.org/x.md)\n"
        "[gone](docs/b.md)\n"
        "[no heading](docs/a.md#nowhere)\n"
        "```\n[in code](docs/c.md)\n```\n"
        "`[span](docs/d.md)`\n",
        encoding="utf-8",
    )
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md line 2: docs/b.md (no such file)",
        "README.md line 3: docs/a.md#nowhere (no heading #nowhere there)",
    ]
