"""Is a CSR linear layer (``SparseLinear``) faster on CPU than a dense ``nn.Linear`` at a given sparsity?

For each weight shape, sparsity and batch size, the dense layer and its CSR copy are timed in interleaved
rounds (dense, CSR, dense, CSR, ...) under ``torch.inference_mode``; each round reports the mean time per call
over a fixed number of calls and the ratio dense/CSR (> 1: CSR is faster).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from benchmarks.harness import BenchmarkRecorder
from slimtrain.compress import global_magnitude_prune
from slimtrain.layers import SparseLinear


def _time_per_call(layer: nn.Module, x: torch.Tensor, calls: int) -> float:
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            layer(x)
        start = time.perf_counter()
        for _ in range(calls):
            layer(x)
        return (time.perf_counter() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``benchmarks/results/sparse_linear.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one shape, few rounds (seconds)")
    parser.add_argument("--full", action="store_true", help="three shapes, more rounds")
    args = parser.parse_args(argv)
    rec = BenchmarkRecorder("sparse_linear", argv)
    shapes = [(1024, 1024)] if not args.full else [(784, 300), (1024, 1024), (4096, 4096)]
    sparsities = [0.5, 0.9, 0.95, 0.99]
    batches = [1, 128]
    rounds, calls = (5, 20) if not args.full else (15, 50)
    torch.manual_seed(0)
    rec.note("threads", torch.get_num_threads())
    rec.note("dtype", "float32")
    rec.note("rounds_x_calls", [rounds, calls])
    for in_features, out_features in shapes:
        dense_layer = nn.Sequential(nn.Linear(in_features, out_features))
        for sparsity in sparsities:
            dense = global_magnitude_prune(dense_layer, sparsity)[0]
            sparse = SparseLinear.from_linear(dense)
            for batch in batches:
                x = torch.randn(batch, in_features)
                dense_ms, csr_ms = [], []
                for _ in range(rounds):
                    dense_ms.append(_time_per_call(dense, x, calls))
                    csr_ms.append(_time_per_call(sparse, x, calls))
                key = f"{in_features}x{out_features}_s{sparsity}_b{batch}"
                rec.add(f"dense_ms_{key}", dense_ms, unit="ms")
                rec.add(f"csr_ms_{key}", csr_ms, unit="ms")
                ratios = [d / c for d, c in zip(dense_ms, csr_ms, strict=True)]
                rec.add(f"csr_speedup_{key}", ratios, unit="x")
    rec.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
