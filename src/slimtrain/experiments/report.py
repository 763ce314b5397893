"""Reports: a results table and accuracy-versus-compression plots, as markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from slimtrain.experiments.comparison import COMPARE_FILE, aggregate
from slimtrain.io import atomic_write_bytes, atomic_write_text
from slimtrain.metrics import upgrade_row

# (field on the x axis, axis label, log scale); each plot has one line per recipe.
PLOTS = (
    ("sparsity_prunable", "sparsity of conv/linear weights (fraction of zeros)", False),
    ("compression_ratio_all", "compression ratio (all parameters, ×)", True),
    ("macs_effective", "effective MACs per sample", True),
)
# (column header, field, format)
TABLE_COLUMNS = (
    ("recipe", "recipe", "{}"),
    ("structure", "structure", "{}"),
    ("level", "requested_level", "{:g}"),
    ("seeds", "seeds", "{}"),
    ("test acc (no ft)", "acc_compressed_no_ft", "{:.4f}"),
    ("val acc", "val_acc_compressed_no_ft", "{:.4f}"),
    ("sparsity (prunable)", "sparsity_prunable", "{:.4f}"),
    ("storage fraction (prunable)", "storage_fraction_prunable", "{:.4f}"),
    ("compression ratio (all)", "compression_ratio_all", "{:.2f}"),
    ("MACs (effective)", "macs_effective", "{:,.0f}"),
    ("theoretical speed-up", "theoretical_speedup", "{:.2f}"),
    ("grad evals", "grad_evals", "{:,.0f}"),
    ("train s", "train_seconds", "{:.1f}"),
)


def load_rows(directory: str | Path) -> list[dict[str, Any]]:
    """Aggregated rows of a compare directory (``compare.json``) or of a single run's sweep files."""
    directory = Path(directory)
    compare_file = directory / COMPARE_FILE
    if compare_file.exists():
        return [upgrade_row(row) for row in json.loads(compare_file.read_text())["aggregated"]]
    sweep_files = sorted(directory.glob("sweep-*.json"))
    if not sweep_files:
        raise FileNotFoundError(
            f"{directory} has neither {COMPARE_FILE} nor sweep-*.json files; run a sweep first"
        )
    rows = [upgrade_row(row) for path in sweep_files for row in json.loads(path.read_text())["rows"]]
    return aggregate(rows)


def _cell(row: dict[str, Any], field: str, fmt: str) -> str:
    value = row.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = fmt.format(value)
    std = row.get(f"{field}_std")
    if std and row.get("seeds", 1) > 1:
        text += " ± " + fmt.format(std).lstrip()
    return text


def results_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The report's table: a header row, then one row per recipe, structure and level."""
    table = [[header for header, _, _ in TABLE_COLUMNS]]
    table += [[_cell(row, field, fmt) for _, field, fmt in TABLE_COLUMNS] for row in rows]
    return table


def plot(rows: list[dict[str, Any]], x_field: str, x_label: str, log_x: bool) -> bytes | None:
    """PNG of test accuracy against ``x_field``, one line per recipe and structure (error bars: std)."""
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get(x_field), int | float):
            lines[f"{row['recipe']} ({row['structure']})"].append(row)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, members in sorted(lines.items()):
        members.sort(key=lambda r: r[x_field])
        ax.errorbar(
            [m[x_field] for m in members],
            [m["acc_compressed_no_ft"] for m in members],
            yerr=[m.get("acc_compressed_no_ft_std", 0.0) for m in members],
            marker="o",
            markersize=3,
            capsize=2,
            label=label,
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy, no fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(directory: str | Path, title: str = "slimtrain report") -> Path:
    """Write ``report.md``, ``report.html`` (images embedded) and one PNG per plot into ``directory``.

    Returns:
        The path of ``report.md``.
    """
    directory = Path(directory)
    rows = load_rows(directory)
    table = results_table(rows)
    images: list[tuple[str, str, bytes]] = []
    for field, label, log_x in PLOTS:
        png = plot(rows, field, label, log_x)
        if png is not None:
            name = f"accuracy_vs_{field}.png"
            atomic_write_bytes(directory / name, png)
            images.append((name, label, png))

    md = [
        f"# {title}",
        "",
        f"Source: `{directory.name}`; accuracy is top-1 on the test split after compression, "
        "without fine-tuning (mean ± std over seeds).",
        "",
    ]
    md.append("| " + " | ".join(table[0]) + " |")
    md.append("|" + "---|" * len(table[0]))
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    md.append("")
    for name, label, _ in images:
        md += [f"![accuracy vs {label}]({name})", ""]
    md_path = directory / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    cells = "".join(f"<th>{html.escape(h)}</th>" for h in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table[1:])
    figures = "".join(
        f'<figure><img alt="accuracy vs {html.escape(label)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"/></figure>'
        for _, label, png in images
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table><tr>{cells}</tr>{body}</table>{figures}</body></html>"
    )
    atomic_write_text(directory / "report.html", page)
    return md_path
