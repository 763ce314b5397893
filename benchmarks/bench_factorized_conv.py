"""Theoretical vs measured speedup of the worked example of docs/metrics.md#macs (CPU).

A 3×3 conv 64 → 64 (padding 1) at 32×32 is compared with its SVD-pair (r = 16) and Tucker-2 (r₁ = r₂ = 16)
replacements built from plain ``nn.Conv2d`` layers: parameters and MACs from ``slimtrain.metrics``,
latency at batch 1 and a large batch, measured speedup per round.

    python -m benchmarks.bench_factorized_conv --quick   # seconds
    python -m benchmarks.bench_factorized_conv --full    # batch 128, 5 rounds of 50 iterations
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from benchmarks.harness import BenchmarkRecorder
from slimtrain.metrics import count_macs, count_parameters, measure_latency

C, K, HW, RANK = 64, 3, 32, 16


def build_models() -> dict[str, nn.Module]:
    """The dense conv and its two factorized replacements (random weights; only shapes matter here)."""
    return {
        "dense": nn.Conv2d(C, C, K, padding=1, bias=False),
        "svd": nn.Sequential(nn.Conv2d(C, RANK, K, padding=1, bias=False), nn.Conv2d(RANK, C, 1, bias=False)),
        "tucker": nn.Sequential(
            nn.Conv2d(C, RANK, 1, bias=False),
            nn.Conv2d(RANK, RANK, K, padding=1, bias=False),
            nn.Conv2d(RANK, C, 1, bias=False),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``benchmarks/results/factorized_conv.{json,md}``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_factorized_conv")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads during timing")
    args = parser.parse_args(argv)
    rec = BenchmarkRecorder("factorized_conv", argv if argv is not None else sys.argv[1:])
    rounds, warmup, iters, big = (5, 10, 50, 128) if args.full else (3, 3, 10, 8)
    models = build_models()
    example = torch.randn(1, C, HW, HW)
    macs = {name: count_macs(m, example).executed for name, m in models.items()}
    for name, m in models.items():
        rec.note(f"params_{name}", count_parameters(m).dense)
        rec.note(f"macs_{name}", macs[name])
        if name != "dense":
            rec.note(f"theoretical_speedup_{name}", macs["dense"] / macs[name])
    rec.note("settings", {"threads": args.threads, "dtype": "float32", "memory_format": "contiguous",
                          "input": [C, HW, HW], "warmup": warmup, "iters": iters})  # fmt: skip
    for batch in (1, big):
        x = torch.randn(batch, C, HW, HW)
        medians: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for name, m in models.items():
                r = measure_latency(m, x, warmup=warmup, iters=iters, threads=args.threads)
                medians[name].append(r.median_ms)
        for name in models:
            rec.add(f"latency_ms_b{batch}_{name}", medians[name], unit="ms")
        for name in ("svd", "tucker"):
            ratios = [d / c for d, c in zip(medians["dense"], medians[name], strict=True)]
            rec.add(f"measured_speedup_b{batch}_{name}", ratios, unit="x")
    rec.save()
    print(rec.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
