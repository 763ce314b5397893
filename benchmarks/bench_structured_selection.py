"""Speed of structured SWD's channel selection: the budget search on the device against a host bisection.

Every training step of ``swd-structured`` re-derives the budget threshold from the current γ and selects the
channels below it (:meth:`slimtrain.swd.ChannelSelection.select`). With the default channel model
(DepGraph's coupled groups, :class:`slimtrain.swd.GroupGates`) the threshold is searched on the device
(:func:`slimtrain.swd.budget_threshold_tensor`), with no host read. Compared side by side in one run, on the
same γ (uniform in [0.1, 1], seed 0), with the same masks:

- ``device_search``: ``ChannelSelection.select`` as the method calls it;
- ``host_bisection``: the same masks at the threshold of a binary search that reads each count on the host
  (``int(GroupGates.parameter_count(...))``, the search ``select`` ran before the device search).

Per model: milliseconds per ``select`` (median over rounds, the variants taking turns), host reads per call
(:class:`benchmarks.harness.HostReads`: ``.item()``, size-dependent ops, copies and ``tolist``) and the
ratio host/device per round. Models: ResNet-20 in the reference layout (width 16, 1×1-conv shortcuts, a
BatchNorm after every addition) and ResNet-18 (width 64; ``--quick``: width 8). On a GPU (its own section)
the host bisection also waits for the device at every read, which is what the device search removes.

Usage: ``python -m benchmarks.bench_structured_selection --quick|--full [--threads N]``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

from benchmarks.harness import BenchmarkRecorder, HostReads, gpu_section, interleaved_time_ms
from slimtrain.models import create_model
from slimtrain.swd import ChannelSelection, GroupGates, parameter_budget

SEED = 0
TARGET = 500  # per mille of the parameters removed


def host_bisection(gates: GroupGates, model: nn.Module, target: int) -> float:
    """The smallest sorted score th with P(th) ≤ B by binary search, each count read on the host."""
    budget = parameter_budget(model, target)
    candidates = gates.scores(model).sort()[0]
    if gates.parameter_count(model, float(candidates[-1])) > budget:
        return math.inf
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if gates.parameter_count(model, float(candidates[mid])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[hi])


def model_specs(full: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, keyword arguments) of the models measured."""
    width = 64 if full else 8
    return [
        ("resnet20_w16_B_bn_after_add", "resnet20", {"width": 16, "shortcut": "B", "bn_after_add": True}),
        (f"resnet18_w{width}", "resnet18", {"width": width}),
    ]


def measure(
    device: torch.device, name: str, kwargs: dict[str, Any], rounds: int, steps: int
) -> dict[str, Any]:
    """Time both variants of one model on ``device``; check they select the same entries."""
    torch.manual_seed(SEED)
    model = create_model(name, num_classes=10, in_channels=3, image_size=32, **kwargs).to(device)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 1.0)
    selection = ChannelSelection(model, TARGET, example_inputs=torch.randn(2, 3, 32, 32, device=device))
    gates = selection.graph
    assert isinstance(gates, GroupGates)

    def on_host() -> dict[str, torch.Tensor]:
        return gates.removal_masks(model, host_bisection(gates, model, TARGET), "ge", "gates")

    def on_device() -> dict[str, torch.Tensor]:
        return {s.name: s.removed for s in selection.select(model)}

    host, dev = on_host(), on_device()
    assert host.keys() == dev.keys() and all(torch.equal(host[k], dev[k]) for k in host), name
    reads = {}
    for variant, call in (("host_bisection", on_host), ("device_search", on_device)):
        with HostReads() as counted:
            call()
        reads[variant] = sum(counted.counts.values())
    times = interleaved_time_ms(
        {"host_bisection": on_host, "device_search": on_device}, device, rounds, steps
    )
    return {
        "times": times,
        "reads": reads,
        "candidates": len(gates.scores(model)),
        "threshold": selection.threshold(model),
    }


def record(rec: BenchmarkRecorder, prefix: str, label: str, result: dict[str, Any]) -> None:
    """Add one model's quantities (``prefix`` marks the GPU section)."""
    times = result["times"]
    for variant, values in times.items():
        rec.add(f"{prefix}{label}.{variant}_ms", values, unit="ms")
        rec.add(f"{prefix}{label}.{variant}_host_reads", result["reads"][variant], unit="reads/call")
    ratios = [h / d for h, d in zip(times["host_bisection"], times["device_search"], strict=True)]
    rec.add(f"{prefix}{label}.ratio_host_over_device", ratios, unit="x")
    rec.note(f"{prefix}{label}.candidates", result["candidates"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``benchmarks/results/structured_selection.{json,md}``; return 0."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_structured_selection", description=__doc__
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="3 rounds of 1 call per variant, ResNet-18 width 8"
    )
    mode.add_argument(
        "--full", action="store_true", help="15 rounds of 5 calls per variant, ResNet-18 width 64"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, steps = (15, 5) if args.full else (3, 1)
    rec = BenchmarkRecorder("structured_selection", argv)
    specs = model_specs(args.full)
    for label, name, kwargs in specs:
        record(rec, "", label, measure(torch.device("cpu"), name, kwargs, rounds, steps))

    def on_gpu(device: torch.device) -> None:
        for label, name, kwargs in specs:
            record(rec, "gpu ", label, measure(device, name, kwargs, rounds, steps))

    gpu_section(rec, on_gpu)
    rec.note("target_permille", TARGET)
    rec.note("gamma", "uniform in [0.1, 1], seed 0")
    path = rec.save()
    print(rec.to_markdown())
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
