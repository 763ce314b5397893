"""Every Python block of README.md and docs/*.md runs as written, page by page, in order, as a reader would.

A page's blocks share one namespace and one temporary working directory, so a later block sees what an
earlier one defined or wrote. Markers, an HTML comment on the line just before a block's fence:

- ``<!-- docs-test: skip REASON -->``: the block needs something absent here (a dataset's files, a GPU);
  the test is skipped with REASON shown (``pytest -ra``).
- ``<!-- docs-test: setup -->`` followed by an HTML comment holding a fenced Python block: code the page
  needs that a reader has already done (e.g. started a process group); it runs before the next block.

Each block is its own test; running one alone (``-k``) first runs the blocks before it on its page.
"""

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(.+?)\s*-->\s*$")
_SETUP = re.compile(
    r"<!--\s*docs-test:\s*setup\s*-->\s*<!--\s*\n```python[ \t]*\n(.*?)^```\s*-->", re.S | re.M
)


@dataclass(frozen=True)
class Block:
    """One Python block of a page: its source, the line it starts on, and why it is skipped (or None)."""

    page: Path
    line: int
    source: str
    skip: str | None
    setup: bool


def blocks_of(page: Path) -> list[Block]:
    """The Python blocks of ``page`` in reading order, hidden setup blocks included."""
    text = page.read_text()
    found: list[tuple[int, Block]] = []
    hidden: list[tuple[int, int]] = []
    for match in _SETUP.finditer(text):
        line = text.count("\n", 0, match.start(1)) + 1
        found.append((match.start(), Block(page, line, match.group(1), None, True)))
        hidden.append((match.start(), match.end()))
    for match in _FENCE.finditer(text):
        if any(start <= match.start() < end for start, end in hidden):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _SKIP.search(before)
        line = text.count("\n", 0, match.start(1)) + 1
        found.append((match.start(), Block(page, line, match.group(1), reason and reason.group(1), False)))
    return [block for _, block in sorted(found, key=lambda item: item[0])]


@dataclass
class PageState:
    """A reader's session on one page: the namespace, the working directory, how far they got."""

    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0
    failed: str | None = None


_STATES: dict[Path, PageState] = {}
ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def _run(block: Block, workdir: Path, state: PageState) -> None:
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        code = compile(block.source, f"{block.page.relative_to(ROOT)}:{block.line}", "exec")
        exec(code, state.namespace)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    return {page: tmp_path_factory.mktemp(page.stem) for page in PAGES}


@pytest.fixture(autouse=True, scope="module")
def _registries_restored():
    """Whatever a page registers (a method, a model, a layer type) is forgotten after this module."""
    from slimtrain.data.registry import DATASETS
    from slimtrain.fw.base import CONSTRAINT_SETS
    from slimtrain.layers.prunable import PRUNABLE_TYPES
    from slimtrain.layers.replacement import PARAMETER_READERS, REPLACEABLE_SUBCLASSES
    from slimtrain.layers.specs import LAYER_TYPES
    from slimtrain.models.registry import MODELS
    from slimtrain.train.method import METHODS

    prunable = dict(PRUNABLE_TYPES)
    with contextlib.ExitStack() as stack:
        for registry in (
            DATASETS,
            CONSTRAINT_SETS,
            LAYER_TYPES,
            MODELS,
            METHODS,
            REPLACEABLE_SUBCLASSES,
            PARAMETER_READERS,
        ):
            stack.enter_context(registry.scratch())
        yield
    PRUNABLE_TYPES.clear()
    PRUNABLE_TYPES.update(prunable)


@pytest.fixture(autouse=True, scope="module")
def _headless_plots():
    backend = matplotlib.get_backend()
    matplotlib.use("Agg")
    yield
    matplotlib.use(backend)


@pytest.mark.parametrize(
    "block", ALL_BLOCKS, ids=[f"{b.page.stem}:{b.line}{'-setup' if b.setup else ''}" for b in ALL_BLOCKS]
)
def test_block_runs_as_written(block, workdirs):
    page_blocks = [b for b in ALL_BLOCKS if b.page == block.page]
    index = page_blocks.index(block)
    state = _STATES.setdefault(block.page, PageState())
    while state.done <= index and state.failed is None:
        current = page_blocks[state.done]
        state.done += 1
        if current.skip is not None:
            continue
        try:
            _run(current, workdirs[block.page], state)
        except Exception as error:
            state.failed = f"line {current.line}: {error!r}"
            if current is block:
                raise
    if block.skip is not None:
        pytest.skip(f"{block.page.relative_to(ROOT)}:{block.line}: {block.skip}")
    if state.failed is not None:
        pytest.fail(f"an earlier block of {block.page.name} failed ({state.failed})")


def test_skip_markers_sit_above_python_blocks():
    """A skip marker must sit right above a Python block; a stray one would silently skip nothing."""
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"<!--\s*docs-test:\s*skip.*?-->[ \t]*\n(.*)", text):
            assert match.group(1).startswith("```python"), (
                f"{page.name}: skip marker not above a python block"
            )
