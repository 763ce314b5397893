"""Measured CPU latency of exported models against the dense model, next to the FLOP (MAC) ratio.

Models (CIFAR geometry, 3×32×32 inputs, 10 classes): ResNet-20 of width 16 and 64 with 1×1-conv ("B")
shortcuts — zero-padding shortcuts cannot have channels removed — and VGG-16 with BatchNorm. Each is timed
dense and in two exported forms:

- ``filter50``: 50% of the channels of every coupled channel group removed (L1 filter pruning applied as
  masks by ``compress_standard``, then physically removed by ``to_exported``);
- ``tucker90``: every 3×3 conv except the 3-channel stem replaced by a Tucker-2 conv (1×1 → 3×3 → 1×1), one
  uniform rank fraction chosen so that 90% of the model's parameters are gone (compression rate
  1 − stored/dense over all parameters ≥ 0.90).

Weights are random: latency depends on shapes, not on values, so no training is needed (the MAC and
parameter counts are those of the same shapes). Timing is interleaved: every round times each variant of a
setting (batch size × memory format) once, in a rotating order, so load drift of the shared machine hits
all of them; the per-round latency ratio exported/dense is recorded with its median and spread.

With glibc's default allocator every large activation is a fresh ``mmap`` whose pages fault in on first
touch; at batch 256 that costs about half of the dense ResNet-20's time, a fixed cost that hides what
compression saves. ``--allocator tuned`` re-runs the benchmark with ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` raised (:data:`TUNED_MALLOC`), so freed activations are
reused, as a long-running inference server with jemalloc/tcmalloc would; its results are saved as
``export_latency_tuned_malloc``.

GPU section (when CUDA is available; otherwise the note ``gpu_section`` says it was skipped): the same
variants moved to the GPU, timed by ``measure_latency`` (which calls ``torch.cuda.synchronize()`` around
every pass) at batch 1 and 256, NCHW and channels-last, in the same interleaved rounds; quantities
``gpu <model>_<variant>_b<batch>_<layout>_ms`` and ``..._ratio``.

    python -m benchmarks.bench_export_latency --quick   # ResNet-20 width 16, batch 1 and 32, 3 rounds
    nice -n 10 python -m benchmarks.bench_export_latency --full --threads 1
    nice -n 10 python -m benchmarks.bench_export_latency --full --threads 1 --allocator tuned
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.harness import BenchmarkRecorder, gpu_section
from slimtrain.compress import FactorizationCostWarning, compress_standard, to_exported, tucker_decompose
from slimtrain.metrics import count_macs, count_parameters, measure_latency
from slimtrain.models import create_model

TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(2**32),
    "MALLOC_TRIM_THRESHOLD_": str(2**32),
    "MALLOC_TOP_PAD_": str(2**30),
}
"""glibc settings of ``--allocator tuned``: never ``mmap`` a block, never give memory back, grow by 1 GiB."""

TARGET = {"filter50": 0.40, "tucker90": 0.50}
"""Issue targets: latency ratio exported/dense at the large batch."""

MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet20_w16": lambda: create_model(
        "resnet20", num_classes=10, in_channels=3, image_size=32, width=16, shortcut="B"
    ),
    "vgg16_bn": lambda: create_model("vgg16_bn", num_classes=10, in_channels=3, image_size=32),
    "resnet20_w64": lambda: create_model(
        "resnet20", num_classes=10, in_channels=3, image_size=32, width=64, shortcut="B"
    ),
}


def _tucker_targets(model: nn.Module) -> list[str]:
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels > 3
    ]


def tucker_at_compression_rate(model: nn.Module, rate: float) -> tuple[nn.Module, float, float]:
    """Tucker-decompose the 3×3 convs at the smallest uniform rank reduction reaching ``rate``.

    Returns:
        The decomposed model, the rank reduction used and the compression rate reached.
    """
    dense = count_parameters(model, "all").dense
    layers = _tucker_targets(model)

    def decompose(step: int) -> tuple[nn.Module, float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FactorizationCostWarning)
            candidate = tucker_decompose(model, step / 100, layers=layers)
        return candidate, step / 100, 1 - count_parameters(candidate, "all").stored / dense

    # The rate grows with the reduction: bisect over reductions 0.50, 0.51, ..., 0.99.
    low, high = 50, 99
    while low < high:
        middle = (low + high) // 2
        if decompose(middle)[2] >= rate:
            high = middle
        else:
            low = middle + 1
    return decompose(low)


def build_variants(name: str, example: torch.Tensor) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """The dense model and its two exported forms, with the facts recorded about them."""
    torch.manual_seed(0)
    dense = MODELS[name]().eval()
    filtered = to_exported(compress_standard(dense, "filter", 0.5, example_inputs=example), "filter", example)
    tucker, reduction, rate = tucker_at_compression_rate(dense, 0.90)
    facts = {"tucker90_rank_reduction": reduction, "tucker90_compression_rate": rate}
    return {"dense": dense, "filter50": filtered.eval(), "tucker90": tucker.eval()}, facts


def time_ms(model: nn.Module, x: torch.Tensor, layout: str, warmup: int, iters: int, threads: int) -> float:
    """Median latency of ``iters`` timed passes after ``warmup`` untimed ones (``measure_latency``)."""
    return measure_latency(
        model, x, warmup=warmup, iters=iters, threads=threads, channels_last=layout == "channels_last"
    ).median_ms


def measure_gpu(
    rec: BenchmarkRecorder, device: torch.device, models: list[str], batches: tuple[int, ...], rounds: int
) -> None:
    """Record the GPU section: latency of every variant on ``device`` and its ratio to the dense model."""
    example = torch.randn(2, 3, 32, 32)
    for name in models:
        variants = {v: m.to(device) for v, m in build_variants(name, example)[0].items()}
        inputs = {batch: torch.randn(batch, 3, 32, 32, device=device) for batch in batches}
        medians: dict[tuple[int, str, str], list[float]] = {}
        for index in range(rounds):
            for batch in batches:
                for layout in ("nchw", "channels_last"):
                    order = list(variants)
                    for v in order[index % len(order) :] + order[: index % len(order)]:
                        ms = time_ms(variants[v], inputs[batch], layout, 5, 20, torch.get_num_threads())
                        medians.setdefault((batch, layout, v), []).append(ms)
        for (batch, layout, v), ms in medians.items():
            rec.add(f"gpu {name}_{v}_b{batch}_{layout}_ms", ms, unit="ms")
            if v != "dense":
                dense_ms = medians[(batch, layout, "dense")]
                ratios = [c / d for c, d in zip(ms, dense_ms, strict=True)]
                rec.add(f"gpu {name}_{v}_b{batch}_{layout}_ratio", ratios, unit="x dense")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``export_latency.{json,md}`` (full mode: ``benchmarks/results``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_export_latency")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads during timing")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 3 quick, 4 full)"
    )
    parser.add_argument(
        "--allocator",
        choices=("default", "tuned"),
        default="default",
        help="glibc malloc as it comes, or tuned to reuse freed activations (see the module docstring)",
    )
    args = parser.parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    if args.allocator == "tuned" and any(os.environ.get(k) != v for k, v in TUNED_MALLOC.items()):
        # glibc reads these once at start-up, so the process must be started again with them.
        env = {**os.environ, **TUNED_MALLOC}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.bench_export_latency", *argv], env)
    torch.set_num_threads(args.threads)  # also for building the variants: oversubscribed threads crawl
    name_suffix = "_tuned_malloc" if args.allocator == "tuned" else ""
    rec = BenchmarkRecorder(f"export_latency{name_suffix}", argv, module="bench_export_latency")
    if args.full:
        models, batches, rounds = list(MODELS), (1, 256), args.rounds or 4
    else:
        models, batches, rounds = ["resnet20_w16"], (1, 32), args.rounds or 3
    big = max(batches)
    settings = {
        "threads": args.threads,
        "dtype": "float32",
        "input": [3, 32, 32],
        "batches": list(batches),
        "rounds": rounds,
        "timing": "one untimed pass per variant and setting first; then per round and variant: "
        "warmup passes, then the median of iters timed passes",
        "iters": {"b1": 20, f"b{big}": 1 if args.full else 3},
        "warmup": {"b1": 3, f"b{big}": 0},
        "weights": "random (latency depends on shapes only)",
        "shortcut": "B (1x1 conv + BN) for the ResNets",
        "nice": os.nice(0),
        "allocator": "glibc, "
        + ("tuned: " + json.dumps(TUNED_MALLOC) if args.allocator == "tuned" else "default"),
    }
    rec.note("settings", settings)
    rec.note("load_average_at_start", list(os.getloadavg()))
    rec.note("targets_at_large_batch", TARGET)
    example = torch.randn(2, 3, 32, 32)
    summary: list[str] = []
    for name in models:
        variants, facts = build_variants(name, example)
        for key, value in facts.items():
            rec.note(f"{name}_{key}", value)
        macs = {v: count_macs(m, example[:1]).executed for v, m in variants.items()}
        params = {v: count_parameters(m, "all").stored for v, m in variants.items()}
        for v in variants:
            rec.note(f"{name}_{v}_params", params[v])
            rec.note(f"{name}_{v}_macs", macs[v])
        inputs = {batch: torch.randn(batch, 3, 32, 32) for batch in batches}

        for batch in batches:  # one untimed pass of everything: kernels chosen, memory allocated
            for layout in ("nchw", "channels_last"):
                for v in variants:
                    time_ms(variants[v], inputs[batch], layout, 0, 1, args.threads)
        medians: dict[tuple[int, str, str], list[float]] = {}
        for index in range(rounds):
            for batch in batches:
                key = f"b{batch}" if batch == 1 else f"b{big}"
                for layout in ("nchw", "channels_last"):
                    order = list(variants)
                    order = order[index % len(order) :] + order[: index % len(order)]
                    for v in order:
                        warmup, iters = settings["warmup"][key], settings["iters"][key]
                        ms = time_ms(variants[v], inputs[batch], layout, warmup, iters, args.threads)
                        medians.setdefault((batch, layout, v), []).append(ms)
            print(f"{name}: round {index + 1}/{rounds} done", flush=True)
        for batch in batches:
            for layout in ("nchw", "channels_last"):
                dense_ms = medians[(batch, layout, "dense")]
                rec.add(f"{name}_dense_b{batch}_{layout}_ms", dense_ms, unit="ms")
                for v in ("filter50", "tucker90"):
                    ms = medians[(batch, layout, v)]
                    ratios = [c / d for c, d in zip(ms, dense_ms, strict=True)]
                    rec.add(f"{name}_{v}_b{batch}_{layout}_ms", ms, unit="ms")
                    rec.add(f"{name}_{v}_b{batch}_{layout}_ratio", ratios, unit="x dense")
                    r = rec.summary[f"{name}_{v}_b{batch}_{layout}_ratio"]
                    summary.append(
                        f"| {name} | {v} | {macs[v] / macs['dense']:.3f} | {params[v] / params['dense']:.3f} "
                        f"| {batch} | {layout} | {r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f}) "
                        f"| {(macs['dense'] / macs[v]) / (1 / r['median']):.2f} |"
                    )
        rec.notes["load_average_at_end"] = list(os.getloadavg())
        path = _save(rec, summary)  # after every model: a slow model never loses the finished ones
    gpu_section(rec, lambda device: measure_gpu(rec, device, models, (1, 256), rounds))
    path = _save(rec, summary)
    print("\n".join(SUMMARY_HEADER + summary), flush=True)
    print(f"results: {path}")
    return 0


SUMMARY_HEADER = [
    "| model | variant | MAC ratio | param ratio | batch | layout | latency ratio, median (min–max) "
    "| theoretical / measured speed-up |",
    "|---|---|---|---|---|---|---|---|",
]


def _save(rec: BenchmarkRecorder, rows: list[str]) -> Path:
    """Save the recorder and append the readable summary table to its markdown page."""
    path = rec.save()
    table = "\n".join(SUMMARY_HEADER + rows)
    markdown = path.with_suffix(".md")
    markdown.write_text(markdown.read_text() + "\n## Latency ratio exported / dense\n\n" + table + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
