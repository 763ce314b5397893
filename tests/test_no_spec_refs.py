"""The package, its docs and its benchmarks cite papers and docs/*.md, never the internal specification.

Users do not have the specification, so a docstring or page pointing at it ("spec §2.4", "metrics.md §3")
points nowhere. Every ``docs/<page>.md#<anchor>`` of a docstring, and every ``<page>.md#<anchor>`` link
between pages, must name a heading that exists.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [
        *(ROOT / "src" / "slimtrain").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "docs").glob("*.md"),
        ROOT / "README.md",
    ]
)
# "§" alone may cite a paper's section; next to "spec" or a page name it cites the specification.
SPEC_REFERENCE = re.compile(
    r"\.md(?:``|`)?\s*§|\b[Ss]pec\b\s*§|\bspec/|\b[Ss]pec\s+(?:``|`)?[a-z_]+\.md"
    r"|\b(?:the|a) spec\b|\bspec's\b|\bspecification\b|\((?:§[\d.]+(?:, )?)+\)"
)
DOC_LINK = re.compile(r"(?:docs/)?([a-z][a-z0-9_-]*)\.md#([^\s)`'\",;:]+)")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of the headings of ``page``: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text().splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_no_reference_to_the_specification(path):
    offending = [
        f"{_relative(path)}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SPEC_REFERENCE.search(line)
    ]
    assert offending == []


def test_doc_anchors_exist():
    pages = {page.stem: heading_anchors(page) for page in (ROOT / "docs").glob("*.md")}
    broken = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for page, anchor in DOC_LINK.findall(line):
                if page in pages and anchor.rstrip(".") not in pages[page]:
                    broken.append(f"{_relative(path)}:{number}: {page}.md#{anchor}")
    assert broken == []


def test_the_checks_catch_what_they_are_for():
    assert SPEC_REFERENCE.search("(spec ``sfw.md`` §2.3)") and SPEC_REFERENCE.search("see metrics.md §4")
    assert not SPEC_REFERENCE.search("for name, spec in listed.items():")
    assert "method-details" in heading_anchors(ROOT / "docs" / "sfw.md")
    assert DOC_LINK.findall("(docs/sfw.md#the-sfw-step).") == [("sfw", "the-sfw-step")]
