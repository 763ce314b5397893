"""Reports: a results table and accuracy-versus-compression plots, as markdown and self-contained HTML.

Both files are rendered from one list of blocks (title, paragraphs, table, figures with captions), so they
carry the same content. Every plot puts more compression to the right on a logarithmic axis (kept fraction
of the weights, compression ratio, theoretical speed-up, and measured CPU latency when the sweep measured
it), draws one colour per method (the same in every report), the dense reference as a dashed line, seeds'
spread as error bars, and marks the Pareto frontier of all the points.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import re
import statistics
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from slimtrain.experiments.comparison import COMPARE_FILE, aggregate
from slimtrain.experiments.significance import verdict
from slimtrain.io import atomic_write_bytes, atomic_write_text
from slimtrain.metrics import upgrade_row

ACCURACY = "acc_compressed_no_ft"


@dataclass(frozen=True)
class PlotSpec:
    """One accuracy-versus-compression plot.

    Attributes:
        field: The row field on the x axis.
        label: The x axis label.
        smaller_is_more_compressed: Whether the axis is inverted (a kept fraction, a latency), so that more
            compression is always to the right.
        caption: What the x axis measures, for the caption.
        right: What lies to the right, for the caption.
    """

    field: str
    label: str
    smaller_is_more_compressed: bool
    caption: str
    right: str = "more compression"


PLOTS = (
    PlotSpec(
        "storage_fraction_prunable",
        "kept fraction of conv/linear weights (log; fewer to the right)",
        True,
        "the fraction of conv and linear weights the compressed model stores (non-zeros while zeros stay in "
        "dense tensors; factors for low rank)",
    ),
    PlotSpec(
        "compression_ratio_all",
        "compression ratio, all parameters (×, log)",
        False,
        "the compression ratio over all parameters (dense count / stored count of the exported model)",
    ),
    PlotSpec(
        "theoretical_speedup",
        "theoretical speed-up, dense MACs / effective MACs (×, log)",
        False,
        "the theoretical speed-up, multiply-accumulates per sample of the dense model over those of the "
        "compressed one",
    ),
)
# (column header, field, format)
TABLE_COLUMNS = (
    ("recipe", "recipe", "{}"),
    ("structure", "structure", "{}"),
    ("level", "requested_level", "{:g}"),
    ("seeds", "seeds", "{}"),
    ("test acc (no ft)", ACCURACY, "{:.4f}"),
    ("val acc", "val_acc_compressed_no_ft", "{:.4f}"),
    ("vs dense (2 SE)", "vs_dense", "{}"),
    ("sparsity (prunable)", "sparsity_prunable", "{:.4f}"),
    ("storage fraction (prunable)", "storage_fraction_prunable", "{:.4f}"),
    ("compression ratio (all)", "compression_ratio_all", "{:.2f}"),
    ("MACs (effective)", "macs_effective", "{:,.0f}"),
    ("theoretical speed-up", "theoretical_speedup", "{:.2f}"),
    ("grad evals", "grad_evals", "{:,.0f}"),
    ("train s", "train_seconds", "{:.1f}"),
)
# The columns the command line prints after a compare (and the demo), and after a sweep.
SUMMARY_COLUMNS = (
    "recipe", "level", "seeds", "test acc (no ft)", "val acc", "compression ratio (all)",
    "theoretical speed-up",
)  # fmt: skip
SWEEP_COLUMNS = (
    "level", "test acc (no ft)", "val acc", "sparsity (prunable)", "storage fraction (prunable)",
    "compression ratio (all)", "theoretical speed-up",
)  # fmt: skip
# What the level of an after-training structure is a fraction of.
LEVEL_NAMES = {"unstructured": "sparsity", "filter": "filters removed", "lowrank": "rank removed"}
# Fixed colours (matplotlib's tab20) for the built-in methods, so a method looks the same in every report;
# other methods get one from their name's checksum.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    "#9edae5", "#393b79",
)  # fmt: skip
METHOD_COLOURS = {
    "dense": "#7f7f7f", "sfw": "#1f77b4", "swd": "#d62728", "swd-structured": "#ff9896", "tdlrt": "#2ca02c",
    "dlrt": "#98df8a", "fixed-rank": "#bcbd22", "nnbcd": "#9467bd", "nnbcd-prune": "#c5b0d5",
    "tt-sgd": "#8c564b", "gmp": "#ff7f0e", "magnitude-ft": "#ffbb78", "lr-rewinding": "#e377c2",
    "network-slimming": "#17becf", "group-lasso": "#9edae5", "nuclear-norm": "#c49c94", "prox-svd": "#393b79",
}  # fmt: skip
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def method_colour(method: str) -> str:
    """The colour of ``method`` in every plot: fixed for the built-in methods, else from its name."""
    return METHOD_COLOURS.get(method) or _PALETTE[zlib.crc32(method.encode()) % len(_PALETTE)]


def seed_rows(directory: str | Path) -> list[dict[str, Any]]:
    """Every per-seed sweep row of a compare directory (``compare.json``) or of one run's ``sweep-*.json``.

    Raises:
        FileNotFoundError: ``directory`` is not a directory, or holds neither file (naming what to run).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    compare_file = directory / COMPARE_FILE
    if compare_file.exists():
        return [upgrade_row(row) for row in json.loads(compare_file.read_text())["rows"]]
    sweep_files = sorted(directory.glob("sweep-*.json"))
    if not sweep_files:
        raise FileNotFoundError(
            f"{directory} has neither {COMPARE_FILE} nor sweep-*.json files: give a run directory after "
            "`slimtrain sweep RUN_DIR`, or the --output directory of `slimtrain compare`"
        )
    return [upgrade_row(row) for path in sweep_files for row in json.loads(path.read_text())["rows"]]


def load_rows(directory: str | Path) -> list[dict[str, Any]]:
    """The rows of :func:`seed_rows`, aggregated over seeds (:func:`.comparison.aggregate`)."""
    return aggregate(seed_rows(directory))


def level_name(row: dict[str, Any]) -> str:
    """A row's level under its own name: ``sparsity 0.9``, ``filters removed 0.5``, ``tau 0.1``.

    A level set by training is named after the method option that set it (SWD's ``target``, TDLRT's ``tau``,
    NN-BCD's ``storage_reduction``); one chosen after training after what it is a fraction of; the trained
    model evaluated as it is: ``as trained``.
    """
    level, option = row["requested_level"], row.get("level_option")
    if level is None or (row["structure"] == "native" and not option):
        return "as trained"
    return f"{option or LEVEL_NAMES.get(row['structure'], 'level')} {level:g}"


@dataclass(frozen=True)
class Reference:
    """The dense model a report draws and :func:`~slimtrain.experiments.selecting.select` measures drops from.

    Attributes:
        recipe: The recipe whose trained, uncompressed model it is.
        test: Its test accuracy, one value per seed.
        val: Its validation accuracy, one value per seed (empty for rows that predate the field).
    """

    recipe: str
    test: tuple[float, ...]
    val: tuple[float, ...]
    dense: bool = True

    def describe(self) -> str:
        """``Dense reference: recipe R, uncompressed`` or, for another method, its uncompressed model."""
        if self.dense:
            return f"Dense reference: recipe {self.recipe}, uncompressed"
        return f"Reference: the uncompressed trained model of recipe {self.recipe} (no dense recipe compared)"


def trained_models(rows: Iterable[dict[str, Any]], recipe: str) -> Reference:
    """The uncompressed trained model of ``recipe``'s runs: ``acc_dense`` and ``val_acc_dense`` by seed."""
    runs: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row["recipe"] == recipe:
            runs.setdefault((row["seed"], row.get("run_identity")), row)
    val = tuple(r["val_acc_dense"] for r in runs.values() if "val_acc_dense" in r)
    return Reference(
        recipe, tuple(r["acc_dense"] for r in runs.values()), val if len(val) == len(runs) else ()
    )


def dense_recipes(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The recipes of method ``dense`` among ``rows``, sorted."""
    return sorted({row["recipe"] for row in rows if row["method"] == "dense"})


def compressed_after_training(rows: Iterable[dict[str, Any]], recipe: str) -> bool:
    """Whether ``recipe``'s rows compress a trained model (so ``acc_dense`` is an uncompressed model's)."""
    own = [row for row in rows if row["recipe"] == recipe]
    return bool(own) and all(row["structure"] != "native" and not row.get("level_option") for row in own)


def report_reference(rows: list[dict[str, Any]]) -> Reference | None:
    """The reference line of a report: the (first) dense recipe; else the one recipe's uncompressed model."""
    dense = dense_recipes(rows)
    if dense:
        return trained_models(rows, dense[0])
    recipes = {row["recipe"] for row in rows}
    if len(recipes) == 1 and compressed_after_training(rows, next(iter(recipes))):
        return replace(trained_models(rows, next(iter(recipes))), dense=False)
    return None


def _spread(values: tuple[float, ...]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def _vs_dense(values: list[float], reference: Reference | None) -> str:
    """The 2-SE verdict of a row's per-seed test accuracies against the dense model's."""
    if reference is None or len(values) < 2 or len(reference.test) < 2:
        return "–"
    return {"A leads": "higher", "B leads": "lower", "tie": "tie"}[verdict(values, reference.test)]


def _cell(row: dict[str, Any], field: str, fmt: str) -> str:
    if field == "requested_level":
        return level_name(row)
    value = row.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = fmt.format(value)
    std = row.get(f"{field}_std")
    if std and row.get("seeds", 1) > 1:
        text += " ± " + fmt.format(std).lstrip()
    return text


def results_table(rows: list[dict[str, Any]], headers: tuple[str, ...] | None = None) -> list[list[str]]:
    """A header row, then one row per entry of ``rows`` (per recipe, structure and level in a report).

    Args:
        rows: Sweep rows, or rows aggregated over seeds (numbers then read ``mean ± std``).
        headers: The columns of :data:`TABLE_COLUMNS` to show, in order (default all of them).
    """
    columns = {header: (field, fmt) for header, field, fmt in TABLE_COLUMNS}
    headers = headers or tuple(columns)
    return [list(headers), *([_cell(row, *columns[h]) for h in headers] for row in rows)]


def _with_verdicts(aggregated: list[dict[str, Any]], rows: list[dict[str, Any]], reference: Reference | None):
    by_level: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in rows:
        by_level[(row["recipe"], row["structure"], row["requested_level"])].append(row[ACCURACY])
    return [
        {
            **row,
            "vs_dense": _vs_dense(
                by_level[(row["recipe"], row["structure"], row["requested_level"])], reference
            ),
        }
        for row in aggregated
    ]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both compression and accuracy, sorted by compression.

    A point is ``(compression, accuracy)``, larger meaning more compressed and more accurate.
    """
    front: list[tuple[float, float]] = []
    for compression, accuracy in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((compression, accuracy))
    return sorted(front)


# Tick mantissas, coarse to fine: 1-2-5, then steps of about a third, a twentieth and a hundredth of a decade.
_MANTISSAS = (
    (1, 2, 5),
    (1, 1.5, 2, 3, 4, 5, 6, 8),
    tuple(m / 10 for m in range(10, 100, 5)),
    tuple(m / 100 for m in range(100, 1000)),
)


def log_ticks(low: float, high: float) -> list[float]:
    """Tick positions for a log axis spanning [low, high] that read as plain numbers (1, 2, 5, 10, ...).

    At most a dozen ticks, at least three where the range allows: 1-2-5 steps, finer ones on a narrow range,
    powers of ten on a wide one.
    """
    low, high = min(low, high), max(low, high)
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    inside: list[float] = []
    for mantissas in _MANTISSAS:
        ticks = (float(f"{m * 10.0**e:.6g}") for e in decades for m in mantissas)
        inside = [t for t in ticks if low <= t <= high]
        if len(inside) > 12:
            powers = [t for t in inside if math.log10(t).is_integer()]
            candidates = powers if len(powers) >= 3 else inside
            return candidates[:: math.ceil(len(candidates) / 12)]
        if len(inside) >= 3:
            return inside
    return inside or [float(f"{math.sqrt(low * high):.2g}")]


def _tick_label(value: float) -> str:
    return f"{value:g}" if value >= 1e-4 else f"{value:.0e}"


@dataclass(frozen=True)
class Figure:
    """A rendered plot: file name, PNG bytes, alt text and caption."""

    name: str
    png: bytes
    alt: str
    caption: str


def _plot(
    aggregated: list[dict[str, Any]], spec: PlotSpec, reference: Reference | None, seeds: int
) -> bytes | None:
    """PNG of mean test accuracy against ``spec.field``, one line per recipe and structure.

    Error bars are the standard deviation over seeds, the dense reference is dashed, the Pareto frontier a
    gold band.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    lines: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in aggregated:
        value = row.get(spec.field)
        if isinstance(value, int | float) and value > 0 and math.isfinite(value):
            lines[(row["method"], row["recipe"], row["structure"])].append(row)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110)
    markers: dict[str, int] = defaultdict(int)
    xs: list[float] = []
    for (method, recipe, structure), members in sorted(lines.items()):
        members.sort(key=lambda r: r["requested_level"] or 0.0)  # the curve follows the level
        x = [m[spec.field] for m in members]
        xs += x
        marker = _MARKERS[markers[method] % len(_MARKERS)]
        markers[method] += 1
        ax.errorbar(
            x,
            [m[ACCURACY] for m in members],
            yerr=[m.get(f"{ACCURACY}_std", 0.0) for m in members],
            color=method_colour(method),
            marker=marker,
            markersize=7 if len(members) == 1 else 5,  # a lone point must not hide under a line
            markeredgecolor="white",
            markeredgewidth=0.8,
            capsize=3,
            linewidth=1.4,
            label=f"{recipe} ({method}, {structure})",
            zorder=3,
        )
    if reference is not None:
        mean = statistics.fmean(reference.test)
        kind = "dense reference" if reference.dense else "uncompressed"
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"{kind} ({reference.recipe})")
        if len(reference.test) > 1:
            std = statistics.stdev(reference.test)
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.06, linewidth=0)
    sign = -1.0 if spec.smaller_is_more_compressed else 1.0
    front = pareto_front([(sign * r[spec.field], r[ACCURACY]) for group in lines.values() for r in group])
    if len(front) > 1:
        ax.plot(
            [sign * c for c, _ in front],
            [a for _, a in front],
            color="#e6b800",  # a gold band no method colour uses
            alpha=0.45,
            linewidth=7,
            solid_capstyle="round",
            label="Pareto frontier",
            zorder=1,
        )
    ax.set_xscale("log")
    if len(set(xs)) == 1:  # one x value: a log axis needs a range around it
        ax.set_xlim(xs[0] / 1.5, xs[0] * 1.5)
    ticks = log_ticks(*ax.get_xlim())  # the padded range, so the extreme points get a tick nearby
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_tick_label(t) for t in ticks])
    if spec.smaller_is_more_compressed:
        ax.invert_xaxis()
    ax.set_xlabel(spec.label)
    ax.set_ylabel("test accuracy, no fine-tuning" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _latency_specs(rows: list[dict[str, Any]]) -> list[PlotSpec]:
    found = (re.fullmatch(r"latency_ms_b(\d+)", key) for row in rows for key in row)
    batches = sorted({int(match.group(1)) for match in found if match})
    return [
        PlotSpec(
            f"latency_ms_b{batch}",
            f"CPU latency of the exported model, batch {batch} (ms, log; faster to the right)",
            True,
            f"the measured CPU latency (median) of the exported model at batch size {batch}",
            "faster",
        )
        for batch in batches
    ]


def _context(directory: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset, model and epochs (from the runs' recipes), seeds, and today's date."""
    recipe_files = [directory / "recipe.yaml", *sorted(directory.glob("*/seed*/recipe.yaml"))]
    recipe = next((yaml.safe_load(p.read_text()) for p in recipe_files if p.exists()), None) or {}
    model = recipe.get("model", {})
    kwargs = ", ".join(f"{k}={v}" for k, v in (model.get("kwargs") or {}).items())
    epochs = sorted({row["epochs"] for row in rows if "epochs" in row}) or [
        recipe.get("train", {}).get("epochs", "?")
    ]
    return {
        "dataset": _source(recipe.get("data", {}), "unknown data"),
        "model": _source(model, "unknown model") + (f" ({kwargs})" if kwargs else ""),
        "epochs": "/".join(str(e) for e in epochs),
        "seeds": sorted({row["seed"] for row in rows}),
        "date": datetime.date.today().isoformat(),
    }


def _blocks(directory: Path, title: str | None) -> tuple[list[tuple[str, Any]], list[Figure]]:
    """The report as blocks — ``("h1"|"h2"|"p", text)``, ``("table", rows)``, ``("figure", Figure)``."""
    rows = seed_rows(directory)
    aggregated = aggregate(rows)
    context = _context(directory, rows)
    seeds = context["seeds"]
    reference = report_reference(rows)
    heading = (
        f"{context['dataset']}, {context['model']}: {context['epochs']} epochs, "
        f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}, {context['date']}"
    )
    blocks: list[tuple[str, Any]] = [("h1", f"{title}: {heading}" if title else heading)]
    blocks.append(
        (
            "p",
            f"Source: {directory.name}. Accuracy is top-1 after compression, without fine-tuning: the mean "
            "over seeds ± their standard deviation (seeds column). A level is named after what it measures: "
            "the sparsity of conv/linear weights, the fraction of filters or of rank removed, or, for a "
            "method that sets its level during training, the option that set it (SWD's target, TDLRT's tau, "
            "NN-BCD's storage_reduction).",
        )
    )
    if reference is not None:
        blocks.append(
            (
                "p",
                f"{reference.describe()}, test accuracy {_spread(reference.test)}. The column "
                "vs dense (2 SE) says whether a level's test accuracy is higher or lower than this model's "
                "by more than two pooled standard errors over seeds, or a tie; it needs two seeds of each.",
            )
        )
    table = results_table(_with_verdicts(aggregated, rows, reference))
    blocks.append(("table", table))
    figures = []
    for spec in (*PLOTS, *_latency_specs(aggregated)):
        png = _plot(aggregated, spec, reference, len(seeds))
        if png is None:
            continue
        caption = (
            f"Test accuracy without fine-tuning against {spec.caption}; {spec.right} to the right. One "
            f"colour per method, error bars one standard deviation over seeds"
            + (f", dashed line the uncompressed model of {reference.recipe}" if reference else "")
            + "; the gold band joins the Pareto frontier, the points no other point beats in both accuracy "
            "and compression."
        )
        figures.append(
            Figure(f"accuracy_vs_{spec.field}.png", png, f"test accuracy vs {spec.label}", caption)
        )
    if figures:
        blocks.append(("h2", "Plots"))
        blocks += [("figure", figure) for figure in figures]
    return blocks, figures


def _markdown_row(cells: list[str]) -> str:
    # A "|" in a cell (a recipe name, a model's kwargs) would split it; a line break would end the row.
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _markdown(blocks: list[tuple[str, Any]]) -> str:
    out: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out += [f"{'#' * int(kind[1])} {content}", ""]
        elif kind == "p":
            out += [content, ""]
        elif kind == "table":
            out.append(_markdown_row(content[0]))
            out.append("|" + "---|" * len(content[0]))
            out += [_markdown_row(r) for r in content[1:]]
            out.append("")
        else:
            out += [f"![{content.alt}]({content.name})", "", f"*{content.caption}*", ""]
    return "\n".join(out)


def _html(blocks: list[tuple[str, Any]]) -> str:
    body: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in content[0])
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in content[1:]
            )
            body.append(f"<table><tr>{head}</tr>{cells}</table>")
        else:
            data = base64.b64encode(content.png).decode()
            body.append(
                f'<figure><img alt="{html.escape(content.alt)}" src="data:image/png;base64,{data}"/>'
                f"<figcaption>{html.escape(content.caption)}</figcaption></figure>"
            )
    title = html.escape(blocks[0][1])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td{white-space:nowrap}"
        "td:nth-child(-n+3){text-align:left}"
        "figcaption{font-style:italic;max-width:800px}figure{margin:1.5em 0}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )


def write_report(directory: str | Path, title: str | None = None) -> Path:
    """Write ``report.md``, ``report.html`` (images embedded) and one PNG per plot into ``directory``.

    Args:
        directory: A compare directory (``compare.json``) or a run directory with ``sweep-*.json`` files.
        title: Put before the generated title (which names dataset, model, epochs, seeds and date).

    Returns:
        The path of ``report.md``; ``report.html`` holds the same content.

    Raises:
        FileNotFoundError: The directory holds neither sweep results nor ``compare.json``.
    """
    directory = Path(directory)
    blocks, figures = _blocks(directory, title)
    for figure in figures:
        atomic_write_bytes(directory / figure.name, figure.png)
    md_path = directory / "report.md"
    atomic_write_text(md_path, _markdown(blocks))
    atomic_write_text(directory / "report.html", _html(blocks))
    return md_path


def _source(section: dict[str, Any], unknown: str) -> str:
    """A recipe section's registry name or factory import path."""
    return str(section.get("name") or section.get("factory") or unknown)
