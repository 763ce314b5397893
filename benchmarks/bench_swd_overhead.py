"""SWD step overhead against plain SGD on a CIFAR ResNet-20, CPU, batch 128.

Both training steps run side by side in every round (alternating order) on copies of the same model and
batch: plain SGD (forward, backward, step) and SWD (the same plus the selective penalty added to the
gradient with ``apply_``, unstructured target 900). The ratio of the per-round medians is the overhead;
the target is ≤ 1.05×. The selection alone is also timed, with the library's ``torch.kthvalue`` selection and
with the reference code's full sort of all magnitudes, to show what the sort costs.

GPU section (when CUDA is available; otherwise the note ``gpu_section`` says it was skipped): the same
measurement with model and batch on the GPU at batch 128, timed between ``torch.cuda.synchronize()`` calls;
quantities and notes prefixed ``gpu``.

Usage: ``python -m benchmarks.bench_swd_overhead --quick|--full [--width W] [--batch B] [--threads N]``;
the committed result is ``--full --threads 1`` (batch 128): on a machine shared by many jobs, two OpenMP
threads stall on every small kernel, which swamps the quantity measured here.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import BenchmarkRecorder, gpu_section, synchronize
from slimtrain.swd import MagnitudeSelection, SelectiveWeightDecay


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def resnet20(width: int, classes: int = 10) -> nn.Module:
    """CIFAR ResNet-20 (3 stages of 3 BasicBlocks) with base width ``width`` (16: the classic 0.27 M)."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for block in range(3):
            layers.append(_Block(cin, cout, 2 if stage and not block else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def _reference_selection(model: nn.Module, target: int) -> list[torch.Tensor]:
    # The reference's per-batch cost: sort every magnitude, index the threshold, compare every tensor.
    magnitudes = torch.cat([p.detach().abs().flatten() for n, p in model.named_parameters() if "bn" not in n])
    threshold = magnitudes.sort()[0][int(target / 1000 * magnitudes.numel())]
    return [p.detach().abs() < threshold for p in model.parameters()]


def measure(device: torch.device, width: int, batch: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """Per-round step times of SGD and SWD, the SWD calls' own time and the selection times, on ``device``."""
    torch.manual_seed(0)
    base = resnet20(width)
    x, y = torch.randn(batch, 3, 32, 32).to(device), torch.randint(0, 10, (batch,)).to(device)
    base.to(device)
    models = {"sgd": base, "swd": copy.deepcopy(base)}
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for k, m in models.items()
    }
    swd = SelectiveWeightDecay(MagnitudeSelection(900), weight_decay=5e-4, total_steps=rounds * steps)

    extra: list[float] = []  # time spent in the SWD calls themselves, per SWD step

    def train_step(kind: str) -> None:
        model, optimizer = models[kind], optimizers[kind]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if kind == "swd":
            synchronize(device)
            start = time.perf_counter()
            swd.apply_(model)
            swd.step()
            synchronize(device)
            extra.append((time.perf_counter() - start) * 1e3)
        optimizer.step()

    for kind in models:  # warm-up: first-call allocations and lazy imports
        train_step(kind)
    extra.clear()
    times: dict[str, list[float]] = {"sgd": [], "swd": []}
    for r in range(rounds):
        for kind in ("sgd", "swd") if r % 2 == 0 else ("swd", "sgd"):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                train_step(kind)
            synchronize(device)
            times[kind].append((time.perf_counter() - start) / steps * 1e3)

    selection = MagnitudeSelection(900)
    selectors = {
        "kthvalue": lambda: selection.select(models["swd"]),
        "sort": lambda: _reference_selection(models["swd"], 900),
    }
    select_times: dict[str, list[float]] = {k: [] for k in selectors}
    for _ in range(rounds):
        for kind, select in selectors.items():
            synchronize(device)
            start = time.perf_counter()
            select()
            synchronize(device)
            select_times[kind].append((time.perf_counter() - start) * 1e3)
    return {
        "sgd": times["sgd"],
        "swd": times["swd"],
        "swd_calls": extra,
        "kthvalue": select_times["kthvalue"],
        "sort": select_times["sort"],
    }


def record(rec: BenchmarkRecorder, prefix: str, times: dict[str, list[float]]) -> None:
    """Record what :func:`measure` returned, quantities and notes prefixed with ``prefix``."""
    rec.add(f"{prefix}step_ms_sgd", times["sgd"], unit="ms")
    rec.add(f"{prefix}step_ms_swd", times["swd"], unit="ms")
    rec.add(f"{prefix}swd_calls_ms", times["swd_calls"], unit="ms")
    rec.add(
        f"{prefix}overhead_ratio_per_round",
        [s / p for s, p in zip(times["swd"], times["sgd"], strict=True)],
        unit="x",
    )
    rec.add(f"{prefix}selection_ms_kthvalue", times["kthvalue"], unit="ms")
    rec.add(f"{prefix}selection_ms_reference_sort", times["sort"], unit="ms")
    ratio = statistics.median(times["swd"]) / statistics.median(times["sgd"])
    rec.note(f"{prefix}overhead_ratio_of_medians", round(ratio, 4))
    # The machine is shared: the SWD calls' own time over the plain step is less exposed to load swings.
    rec.note(
        f"{prefix}overhead_ratio_from_swd_calls",
        round(1 + statistics.median(times["swd_calls"]) / statistics.median(times["sgd"]), 4),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``benchmarks/results/swd_overhead.{json,md}``; return 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_swd_overhead", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 rounds of 1 step per variant, batch 32")
    mode.add_argument("--full", action="store_true", help="10 rounds of 3 steps per variant, batch 128")
    parser.add_argument("--width", type=int, default=16, help="ResNet-20 base width (reference code: 64)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 128, quick: 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    args.batch = args.batch or (128 if args.full else 32)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, steps = (10, 3) if args.full else (3, 1)
    rec = BenchmarkRecorder("swd_overhead", argv)

    record(rec, "", measure(torch.device("cpu"), args.width, args.batch, rounds, steps))
    rec.note("target_ratio", 1.05)
    rec.note("width", args.width)
    rec.note("batch", args.batch)
    rec.note("parameters", sum(p.numel() for p in resnet20(args.width).parameters()))
    rec.note("steps_per_round", steps)
    rec.note("swd_target_permille", 900)
    gpu_rounds, gpu_steps = (20, 10) if args.full else (3, 3)
    gpu_section(
        rec, lambda device: record(rec, "gpu ", measure(device, args.width, 128, gpu_rounds, gpu_steps))
    )
    path = rec.save()
    print(rec.to_markdown())
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
