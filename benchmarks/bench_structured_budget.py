"""Parameter budget against the count the export reaches, for structured SWD and network slimming.

Both methods prune channels to a budget B = ⌊(1 − target)·N_total⌋ counted by their channel model, for
both channel models (``channel_model``): ``groups`` (the default, ``slimtrain.swd.GroupGates``:
Torch-Pruning's coupled groups holding a BatchNorm, counted as the export removes them) and ``reference``
(the SWD reference's tracer, ``slimtrain.swd.ChannelGraph``: BatchNorm gates, analytic live channels of
every layer).
The export (``to_exported(model, "native", x)``, what ``slimtrain export`` and a sweep row use) removes
channels by Torch-Pruning's coupled groups, a channel only where every producer in its group is zero. The
reference's count disagrees wherever the tracer gates channels that a coupled group shares with another gate
(issue #22); the groups' count is the export's by construction.

For every model, method and target (per-mille 500 and 900): the budget B (the method's ``params_budget``,
the sweep row's field), the analytic kept count P(th) at the threshold the method chooses, and the distinct
parameter count of the exported model (``sum(p.numel())``, checked equal to the sweep's
``params_stored_all`` and the exported outputs checked equal to the pruned model's). No training: the
BatchNorm weights are drawn uniform in [0.1, 1] (seed 0), which is all the budget logic reads; both methods
then prune with the same gates and bisection, so their rows agree unless one of them refuses. Layers whose
analytic and exported counts differ are listed per model and target (``layer_differences`` in the JSON,
and a section of the markdown). A model a method refuses gets the refusal message instead of numbers.

Models (``slimtrain.models``, CIFAR geometry 3×32×32, 10 classes): ``resnet20`` with ``bn_after_add`` and
``shortcut="B"`` (the SWD reference layout), the same with zero-padding (``"A"``) shortcuts, ``resnet20``
with ``shortcut="B"`` and no BatchNorm after the additions (the standard layout), ``resnet18`` and
``vgg16_bn``.

    python -m benchmarks.bench_structured_budget --quick   # ResNet-20 width 8, ResNet-18 width 16, VGG ×0.25
    python -m benchmarks.bench_structured_budget --full    # ResNet-20 width 16, ResNet-18 width 64, VGG ×1
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from benchmarks.harness import BenchmarkRecorder
from slimtrain.compress import to_exported
from slimtrain.compress.exportable import ChannelsKeptWarning, check_same_outputs
from slimtrain.experiments.sweeping import budget_fields
from slimtrain.models import create_model
from slimtrain.swd import ChannelGraph, ChannelSelection, GroupGates
from slimtrain.train.method import get_method_class

METHODS = ("swd-structured", "network-slimming")
CHANNEL_MODELS = ("groups", "reference")
TARGETS = (500, 900)
SEED = 0


def model_specs(full: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, registry name, keyword arguments)`` of the measured models."""
    w20, w18, vgg = (16, 64, 1.0) if full else (8, 16, 0.25)
    return [
        (
            f"resnet20_w{w20}_B_bn_after_add",
            "resnet20",
            {"width": w20, "shortcut": "B", "bn_after_add": True},
        ),
        (
            f"resnet20_w{w20}_A_bn_after_add",
            "resnet20",
            {"width": w20, "shortcut": "A", "bn_after_add": True},
        ),
        (f"resnet20_w{w20}_B", "resnet20", {"width": w20, "shortcut": "B"}),
        (f"resnet18_w{w18}", "resnet18", {"width": w18}),
        (f"vgg16_bn_x{vgg:g}", "vgg16_bn", {"width_multiplier": vgg}),
    ]


def random_gamma_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """The model in eval mode, every BatchNorm weight uniform in [0.1, 1] (fixed seed)."""
    torch.manual_seed(SEED)
    model = create_model(name, num_classes=10, in_channels=3, image_size=32, **kwargs).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.affine:
                module.weight.copy_(0.1 + 0.9 * torch.rand(module.weight.shape, generator=generator))
    return model


def analytic_per_layer(graph: ChannelGraph, model: nn.Module, threshold: float) -> dict[str, int]:
    """Per layer, the parameters ``graph.parameter_count`` keeps (the same rule; the sum is checked)."""
    keep = graph.gate_keep_masks(model, threshold)

    def alive(source: Any, full: int) -> int:
        live = graph.live_channels(source, keep)
        return full if live is None else int(live.sum())

    counts: dict[str, int] = {}
    for name, (source_in, source_out) in graph.convs.items():
        conv = model.get_submodule(name)
        n_out, n_in = alive(source_out, conv.out_channels), alive(source_in, conv.in_channels)
        counts[name] = n_out * n_in * conv.weight[0, 0].numel() + (n_out if conv.bias is not None else 0)
    for name, source in graph.norms.items():
        norm = model.get_submodule(name)
        counts[name] = 2 * alive(source, norm.num_features) if norm.affine else 0
    for name, (source_in, per_channel) in graph.linears.items():
        linear = model.get_submodule(name)
        n_in = alive(source_in, linear.in_features // per_channel) * per_channel
        counts[name] = linear.out_features * n_in + (linear.out_features if linear.bias is not None else 0)
    return counts


def groups_per_layer(gates: GroupGates, model: nn.Module, threshold: float) -> dict[str, int]:
    """Per layer, the parameters ``gates.parameter_count`` keeps: its own minus the removed entries."""
    counts = own_parameters(model)
    for name, removed in gates.removal_masks(model, threshold).items():
        counts[name.rpartition(".")[0]] -= int(removed.sum())
    return counts


def own_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters held by each module itself (not its children), by qualified name."""
    return {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }


def layer_differences(analytic: dict[str, int], exported: dict[str, int]) -> list[dict[str, Any]]:
    """Layers whose analytic and exported counts differ, with both counts."""
    return [
        {
            "layer": name,
            "analytic": count,
            "exported": exported.get(name, 0),
            "diff": exported.get(name, 0) - count,
        }
        for name, count in analytic.items()
        if exported.get(name, 0) != count
    ]


def measure(
    name: str, kwargs: dict[str, Any], method_name: str, target: int, channel_model: str = "groups"
) -> dict[str, Any]:
    """Budget, counted kept and exported count of one model, method, target and channel model.

    A refusal of the method or the export gives its message instead.
    """
    model = random_gamma_model(name, kwargs)
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
    cls = get_method_class(method_name)
    method = cls(cls.Options(target=target / 1000, channel_model=channel_model), None)
    method.example_inputs = example  # as the trainer sets it
    row: dict[str, Any] = {"method": method_name, "channel_model": channel_model, "target": target}
    try:
        method.prepare(model)
        graph = method.selection.graph if method_name == "swd-structured" else method.channel_graph
        selection = ChannelSelection(model, target, penalize_filters=True, graph=graph)
        threshold = selection.threshold(model)
    except Exception as error:  # a refusal of the method: its message is the result
        return {**row, "refused": f"{type(error).__name__}: {error}"}
    row["budget"] = method.params_budget(model)
    row["analytic"] = graph.parameter_count(model, threshold)
    if isinstance(graph, GroupGates):
        per_layer = groups_per_layer(graph, model, threshold)
        assert sum(per_layer.values()) == row["analytic"], "per-layer split"
    else:
        per_layer = analytic_per_layer(graph, model, threshold)
        assert sum(per_layer.values()) + _ungated(model, graph) == row["analytic"], "per-layer split"
    method.finalize(model)
    compressed = method.compress(model, "native", target / 1000, example).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exported = to_exported(copy.deepcopy(compressed), "native", example)
        except Exception as error:
            return {**row, "export_refused": f"{type(error).__name__}: {error}"}
    kept = [str(w.message) for w in caught if issubclass(w.category, ChannelsKeptWarning)]
    if kept:  # what a sweep row leaves out: the model saved still holds every zeroed channel
        row["export_refused"] = kept[0]
        row["params_saved"] = sum(p.numel() for p in exported.parameters())
        return row
    row["exported"] = sum(p.numel() for p in exported.parameters())
    assert budget_fields(row["budget"], None, target)["params_budget"] == row["budget"]
    row["max_abs_error"] = check_same_outputs(compressed, exported, example)
    row["layer_differences"] = layer_differences(per_layer, own_parameters(exported))
    return row


def _ungated(model: nn.Module, graph: ChannelGraph) -> int:
    """Parameters outside the graph's conv, BatchNorm and linear layers (counted whole by both)."""
    inside = {
        id(p)
        for name in (*graph.convs, *graph.norms, *graph.linears)
        for p in model.get_submodule(name).parameters(recurse=False)
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in inside)


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """The budget table, then the layers where analytic and exported counts differ."""
    lines = [
        "## Budget against the exported count",
        "",
        "| model | channel model | method | target ‰ | budget B | counted kept | exported | exported − B "
        "| exported − counted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['channel_model']} | {r['method']} | {r['target']} |"
        if "refused" in r:
            lines.append(f"{head} refused: {r['refused']} | | | | | |")
            continue
        if "export_refused" in r:
            refused = f"export refused ({r['params_saved']:,} saved, channels kept): {r['export_refused']}"
            lines.append(f"{head} {r['budget']:,} | {r['analytic']:,} | {refused} | | |")
            continue
        over_budget, over_analytic = r["exported"] - r["budget"], r["exported"] - r["analytic"]
        lines.append(
            f"{head} {r['budget']:,} | {r['analytic']:,} | {r['exported']:,} | {over_budget:+,} "
            f"| {over_analytic:+,} |"
        )
    lines += ["", "## Layers where the counted and the exported counts differ", ""]
    shown: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        diffs = r.get("layer_differences")
        if diffs is None:
            continue
        key = (r["model"], r["channel_model"], r["target"])
        what = f"{r['model']} {r['channel_model']} ‰{r['target']} {r['method']}"
        if key in shown and shown[key] == diffs:
            lines.append(f"- {what}: the same layers as above")
            continue
        shown[key] = diffs
        if not diffs:
            lines.append(f"- {what}: none")
            continue
        listed = ", ".join(f"`{d['layer']}` {d['analytic']:,}→{d['exported']:,}" for d in diffs)
        lines.append(f"- {what} (counted→exported): {listed}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_structured_budget")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    args = parser.parse_args(argv)
    rec = BenchmarkRecorder("structured_budget", argv)
    rows = []
    for label, name, kwargs in model_specs(args.full):
        for channel_model in CHANNEL_MODELS:
            for method_name in METHODS:
                for target in TARGETS:
                    row = {"model": label, **measure(name, kwargs, method_name, target, channel_model)}
                    rows.append(row)
                    for key in ("budget", "analytic", "exported"):
                        if key in row:
                            quantity = f"{label}.{channel_model}.{method_name}.t{target}.{key}"
                            rec.add(quantity, row[key], unit="params")
                    print(
                        label,
                        channel_model,
                        method_name,
                        target,
                        *(f"{k}={row[k]}" for k in ("budget", "analytic", "exported", "refused") if k in row),
                        flush=True,
                    )
    rec.note("seed", SEED)
    rec.note("gamma", "uniform in [0.1, 1]")
    rec.note("rows", rows)
    path = rec.save()
    markdown = Path(path).with_suffix(".md")
    markdown.write_text(markdown.read_text() + "\n" + markdown_tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
