"""A printable per-layer table: name, type, shape, params, nonzeros, sparsity, MACs."""

from __future__ import annotations

from torch import nn

from slimtrain.metrics.counting import count_tensors
from slimtrain.metrics.macs import ExampleInput, count_macs


def layer_table(model: nn.Module, example_input: ExampleInput) -> str:
    """Render one row per parameter tensor of ``model`` (factorized layers as one ``factors`` row).

    Sparsity is within the stored entries (``1 − nonzeros/params``). The MACs column holds the per-sample
    dense MACs of Conv/Linear layers (on their weight row) and the executed MACs of factorized layers; a
    total row closes the table.

    Args:
        model: The model (masked or exported).
        example_input: A real input at the evaluation resolution (first dimension = batch).

    Returns:
        A fixed-width text table.
    """
    macs = count_macs(model, example_input)
    layer_macs = {layer.name: layer.dense for layer in macs.layers} | macs.factorized
    header = ("name", "type", "shape", "params", "nonzeros", "sparsity", "MACs")
    entries = count_tensors(model, "all")
    rows = []
    for e in entries:
        shape = " + ".join("x".join(map(str, s)) or "scalar" for s in e.shapes)
        mac = layer_macs.get(e.module) if e.role in ("weight", "factors") else None
        rows.append(_row(e.name, e.module_type, shape, e.stored, e.nonzero, mac))
    stored, nonzero = sum(e.stored for e in entries), sum(e.nonzero for e in entries)
    rows.append(_row("total", "", "", stored, nonzero, macs.executed))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    numeric = {3, 4, 5, 6}

    def line(r: tuple) -> str:
        cells = enumerate(zip(r, widths, strict=True))
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in cells)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])


def _row(name: str, type_: str, shape: str, stored: int, nonzero: int, macs: float | None) -> tuple[str, ...]:
    """One table row; sparsity here is within the stored entries (1 − nonzeros/params)."""
    sparsity = 1 - nonzero / stored if stored else 0.0
    return (name, type_, shape, f"{stored:,}", f"{nonzero:,}", f"{sparsity:.2%}", _fmt_macs(macs))


def _fmt_macs(macs: float | None) -> str:
    """Thousands-separated MACs, ``-`` when not applicable."""
    if macs is None:
        return "-"
    return f"{macs:,.0f}" if float(macs).is_integer() else f"{macs:,.1f}"
