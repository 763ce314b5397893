"""The report: a title naming the experiment, levels under their own names, the dense reference and the 2-SE
verdict, the same content in markdown and HTML, stable method colours, readable log ticks, a true frontier.
"""

import datetime
import html
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.experiments.report import log_ticks, method_colour, pareto_front, write_report
from slimtrain.train.method import METHODS

from .results_fixture import row, write_compare


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rows = []
    for seed, shift in enumerate((0.0, 0.002, -0.002)):
        rows += [
            row(
                "dense",
                "dense",
                seed,
                lv,
                0.9 + shift,
                acc + shift,
                acc_dense=0.9 + shift,
                latency_ms_b1=2.0 - lv,
            )
            for lv, acc in ((0.0, 0.9), (0.9, 0.6))
        ]
        rows.append(
            row(
                "swd",
                "swd",
                seed,
                0.95,
                0.89,
                0.899 + shift,
                structure="native",
                option="target",
                latency_ms_b1=0.5,
            )
        )
    folder = write_compare(tmp_path_factory.mktemp("cmp"), rows)
    markdown = write_report(folder, title="nightly").read_text()
    return folder, markdown, (folder / "report.html").read_text()


def test_title_names_data_model_epochs_seeds_and_date(report):
    _, markdown, page = report
    title = markdown.splitlines()[0]
    for part in (
        "nightly",
        "fashion-mnist",
        "lenet5",
        "7 epochs",
        "seeds 0, 1, 2",
        datetime.date.today().isoformat(),
    ):
        assert part in title
    assert f"<h1>{html.escape(title.removeprefix('# '))}</h1>" in page


def test_markdown_and_html_carry_the_same_text(report):
    """Every paragraph, caption and table cell of the markdown is in the HTML ("no fine-tuning" included)."""
    _, markdown, page = report
    text = html.unescape(re.sub(r"<[^>]+>", "\n", page))
    pieces = [p.strip("*") for p in markdown.splitlines() if p and not p.startswith(("#", "!", "|"))]
    pieces += [
        c.strip()
        for line in markdown.splitlines()
        if line.startswith("| ")
        for c in line.strip("|").split("|")
    ]
    assert any("without fine-tuning" in p for p in pieces)
    for piece in pieces:
        assert piece in text
    assert markdown.count("![") == page.count("<figure>") == page.count("<figcaption>") == 4  # 3 + latency


def test_levels_are_named_and_compared_with_the_dense_model(report):
    """The table names each level by what it is; the 2-SE verdict says lower / tie against dense."""
    _, markdown, _ = report
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = {
        tuple(c.strip() for c in line.strip("|").split("|"))[headers.index("level")]: line
        for line in lines[1:]
    }
    assert set(cells) == {"sparsity 0", "sparsity 0.9", "target 0.95"}
    verdict = headers.index("vs dense (2 SE)")
    assert cells["sparsity 0.9"].strip("|").split("|")[verdict].strip() == "lower"
    assert cells["target 0.95"].strip("|").split("|")[verdict].strip() == "tie"
    assert "Dense reference: recipe dense" in markdown


def test_plots_are_written(report):
    folder, _, _ = report
    for field in (
        "storage_fraction_prunable",
        "compression_ratio_all",
        "theoretical_speedup",
        "latency_ms_b1",
    ):
        assert (folder / f"accuracy_vs_{field}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", METHODS.names())
def test_each_built_in_method_has_its_own_fixed_colour(method):
    others = {method_colour(m) for m in METHODS.names() if m != method}
    assert method_colour(method) == method_colour(method) and method_colour(method) not in others


def test_a_plugin_method_gets_a_colour_from_its_name():
    assert method_colour("my-plugin") == method_colour("my-plugin")
    assert re.fullmatch(r"#[0-9a-f]{6}", method_colour("my-plugin"))


points = st.lists(st.tuples(st.floats(0.01, 100), st.floats(0, 1)), min_size=1, max_size=30)


@given(points)
def test_pareto_front_is_exactly_the_undominated_points(pts):
    front = pareto_front(pts)

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)

    assert all(not dominated(p) for p in front)
    assert all(p in front or dominated(p) for p in pts if pts.count(p) == 1)
    assert front == sorted(front)


@given(st.floats(1e-6, 1e6), st.floats(1.05, 1e10))
def test_log_ticks_are_round_numbers_inside_the_range(low, factor):
    """One to twelve ticks, three once the range spans a factor 2, each a round number (not 2×10⁰)."""
    high = low * factor
    ticks = log_ticks(low, high)
    assert 1 <= len(ticks) <= 12 and (len(ticks) >= 3 or factor < 2)
    assert all(low <= t <= high for t in ticks) or len(ticks) == 1
    for t in ticks:  # at most three significant digits: labels read as plain decimals
        assert float(f"{t:.3g}") == t


def test_a_pipe_in_a_recipe_name_keeps_the_markdown_columns(tmp_path):
    """A "|" inside a cell is escaped: every row of a markdown table has its header's column count."""
    rows = [row("a|b", "dense", 0, lv, 0.9, acc, acc_dense=0.9) for lv, acc in ((0.0, 0.9), (0.9, 0.6))]
    markdown = write_report(write_compare(tmp_path, rows)).read_text()
    table: list[str] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            cells = [len(re.split(r"(?<!\\)\|", t)) for t in table]
            assert len(set(cells)) == 1, table
        table = []
    assert "a\\|b" in markdown
