"""The documents stay usable: the README short enough for a GX owner, and every
relative link in README.md, CONTRIBUTING.md, CHANGELOG.md, docs/*.md and the
READMEs under tests/ and ext/ leading somewhere (the file, and the heading when
the link names one)."""

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


def internal_citations(path: Path, root: Path = ROOT) -> list[str]:
    """Lines of ``path`` that cite what is not in the repository."""
    return [
        f"{path.relative_to(root)} line {number}: {match.group(0)}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if (match := _INTERNAL.search(line))
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
