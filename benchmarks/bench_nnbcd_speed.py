"""Speed of one NN-BCD sweep versus training-set size N, layer width and dtype (synthetic data).

Network d→w→w→10 with d = 784, both hidden layers TT-compressed at rank 40 (modes chosen per width),
γ = ρ = 0.5, α = 1, τ = 1. Each configuration runs one warm-up sweep and then times ``rounds`` sweeps
(the objective evaluation after each sweep is included, accuracy evaluation is not). ``--quick``:
N ∈ {1000, 2000}, width 256, float32 and float64; ``--full``: N ∈ {1000, 2000, 6000}, widths 256 and 1024.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.harness import BenchmarkRecorder
from slimtrain.bcd import NNBCD, TensorTrainCopy

# Row-major mode tuples of the hidden weights (w × 784 and w × w).
MODES = {
    256: {0: (4, 4, 4, 4, 4, 4, 7, 7), 1: (4,) * 8},
    1024: {0: (4, 4, 4, 4, 4, 4, 4, 7, 7), 1: (4,) * 10},
}


def time_sweeps(n: int, width: int, dtype: torch.dtype, rounds: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``rounds`` timed sweeps after one warm-up sweep.

    CPU time is recorded too because on a shared machine wall time includes waiting for other processes.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    copies = {i: TensorTrainCopy(m, 40) for i, m in MODES[width].items()}
    solver = NNBCD([784, width, width, 10], tau=1.0, compression=copies, dtype=dtype)
    solver.setup(x, y)
    solver.sweep()
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        solver.sweep()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_nnbcd_speed", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    args = parser.parse_args(argv)
    sizes, widths, rounds = (
        ([1000, 2000], [256], 2) if not args.full else ([1000, 2000, 6000], [256, 1024], 3)
    )
    rec = BenchmarkRecorder("nnbcd_speed", argv)
    rec.note("torch_threads", torch.get_num_threads())
    rec.note("network", "784→w→w→10, hidden layers TT rank 40, γ=ρ=0.5, α=1, τ=1, synthetic data")
    for width in widths:
        for n in sizes:
            for dtype in (torch.float32, torch.float64):
                name = f"sweep_s_w{width}_n{n}_{str(dtype).removeprefix('torch.')}"
                wall, cpu = time_sweeps(n, width, dtype, rounds)
                rec.add(f"{name}_wall", wall, unit="s")
                rec.add(f"{name}_cpu", cpu, unit="s")
                print(f"{name}: wall {min(wall):.3f} s, cpu {min(cpu):.3f} s (best of {rounds})", flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
