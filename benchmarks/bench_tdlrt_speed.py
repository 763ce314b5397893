"""Training step time and peak memory of TDLRT (two-pass, parallel, local) against dense training (CPU).

Steps of docs/tdlrt.md#the-two-pass-step and #single-pass-and-local-variants: CIFAR ResNet-20 at widths 16, 32
and 64, batch 128, 32×32×3 inputs, 10 classes, one torch thread. Every conv but the first is a Tucker conv
with adaptive channel modes, **converted with a rank fraction** (default 0.2 of the channel counts; not ranks
reached by a τ training run, which would take hours on this CPU) chosen so that the factorized layers' eval
compression rate is ≥ 90% at width 64. The integrator runs with ``rank_policy="fixed"`` so that every timed
round is at the same ranks; its per-step work (augmentation to twice the rank, transport, second pass,
truncated HOSVD) is that of the adaptive policy.

Per width, side by side:

- training step time (median over rounds, ms): dense SGD step (one forward/backward), TDLRT two-pass step,
  TDLRT parallel step, TDLRT with local S-iterations (mean step of a whole 10-batch cycle: one augmenting
  pass, nine core steps at the augmented ranks, one truncation), and their ratios to dense;
- peak memory (``slimtrain.metrics.measure_peak_memory``, resident-set high-water mark of one standard
  training step in a fresh process) of the dense and the factorized model. A TDLRT step runs its passes one
  after the other, so its peak is that of one factorized pass plus the augmented factors and core (noted);
- inference (eval mode, batch 128) of the trained factorized model as exported (its Tucker layers run as
  1×1 → k×k → 1×1 convs) against the dense model, and the speedup.

``--full``: 3 rounds per quantity after one warm-up call. ``--quick``: width 16, batch 32, 2 rounds.

GPU section (when CUDA is available; otherwise the note ``gpu_section`` says it was skipped): the same step
times and ratios with model and batch on the GPU (batch 128; widths 16, 32, 64 with ``--full``, 16 with
``--quick``), timed between ``torch.cuda.synchronize()`` calls, the peak GPU memory of one training step
(``torch.cuda.max_memory_allocated``) and the inference speedup of the factorized model; quantities
prefixed ``gpu``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchmarkRecorder, gpu_section, synchronize
from slimtrain.lowrank import TDLRT, convert_to_lowrank, lowrank_report
from slimtrain.metrics import measure_latency, measure_peak_memory
from slimtrain.models import create_model


def _timed(step, rounds: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Milliseconds of each of ``rounds`` calls of ``step`` on ``device`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return times


LOCAL_STEPS = 10
"""Cycle length of the local S-iteration variant (the authors' default; docs/tdlrt.md)."""


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def measure_width(rec: BenchmarkRecorder, width: int, batch: int, rounds: int, fraction: float) -> None:
    """Record the step times, memory and inference of one ResNet-20 width."""
    torch.manual_seed(width)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    dense = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, width=width)
    factorized = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, width=width)
    convert_to_lowrank(factorized, conv="tucker", linear=None, rank_fraction=fraction)
    report = lowrank_report(factorized)
    tag = f"w{width}"
    rec.note(f"{tag} cr_percent_eval_factorized_only", round(report["cr_percent_eval_factorized_only"], 2))
    rec.note(f"{tag} cr_percent_eval_dlrt_convention", round(report["cr_percent_eval_dlrt_convention"], 2))
    rec.note(
        f"{tag} ranks (first, last factorized conv)",
        [r["ranks"] for r in report["layers"][:: len(report["layers"]) - 1]],
    )

    _record_step_times(rec, tag, _step_times(x, y, dense, width, rounds, fraction))

    for label, model in (("dense", dense), ("factorized", factorized)):
        for mode in ("train", "eval"):
            peak = measure_peak_memory(model, x, mode=mode, loss_fn=_cross_entropy_proxy)
            rec.add(f"{tag} peak_MiB_{mode} {label}", peak.peak_bytes / 2**20, unit="MiB")
            rec.add(f"{tag} step_MiB_{mode} {label}", peak.step_bytes / 2**20, unit="MiB")
    augmented = sum(
        layer["train_count_tucker"] - layer["eval_count"] for layer in report["layers"]
    )  # the extra factors/cores the integrator holds during a step
    rec.note(f"{tag} augmented_extra_MiB (float32)", round(4 * augmented / 2**20, 3))

    latencies = {}
    for label, model in (("dense", dense), ("factorized", factorized)):
        result = measure_latency(model, x, warmup=2, iters=rounds * 2)
        latencies[label] = result.median_ms
        rec.add(f"{tag} inference_ms {label}", result.median_ms, unit="ms")
    rec.add(f"{tag} inference_speedup factorized", latencies["dense"] / latencies["factorized"], unit="x")


def _step_times(
    x: torch.Tensor, y: torch.Tensor, dense: torch.nn.Module, width: int, rounds: int, fraction: float
) -> dict[str, list[float]]:
    """Milliseconds per training step of ``dense`` (ResNet-20 of ``width``) and of TDLRT's variants.

    Everything runs on the device of ``x``.
    """
    device = x.device
    optimizer = _sgd(dense.parameters())
    dense.train()

    def dense_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        optimizer.step()

    times = {"dense": _timed(dense_step, rounds, device)}
    for variant in ("two_pass", "parallel", "local"):
        model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, width=width)
        convert_to_lowrank(model, conv="tucker", linear=None, rank_fraction=fraction)
        model.to(device).train()
        integrator = TDLRT(
            model, _sgd, tau=0.1, variant=variant, rank_policy="fixed", local_steps=LOCAL_STEPS
        )
        steps = LOCAL_STEPS if variant == "local" else 1  # a whole cycle, since its steps differ

        def closure(model=model) -> torch.Tensor:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        def run(integrator=integrator, closure=closure, steps=steps) -> None:
            for _ in range(steps):
                integrator.step(closure)

        times[f"tdlrt_{variant}"] = [t / steps for t in _timed(run, rounds, device)]
    return times


def _record_step_times(rec: BenchmarkRecorder, tag: str, times: dict[str, list[float]]) -> None:
    """Record the step times and each TDLRT variant's ratio to the dense step (per round)."""
    for name, values in times.items():
        rec.add(f"{tag} step_ms {name}", values, unit="ms")
    dense_median = statistics.median(times["dense"])
    for name in ("tdlrt_two_pass", "tdlrt_parallel", "tdlrt_local"):
        rec.add(f"{tag} step_ratio {name}/dense", [t / dense_median for t in times[name]], unit="x")


def measure_gpu(
    rec: BenchmarkRecorder,
    device: torch.device,
    widths: tuple[int, ...],
    batch: int,
    rounds: int,
    fraction: float,
) -> None:
    """Record the GPU section: step times and ratios, peak GPU memory and inference, per width."""
    for width in widths:
        torch.manual_seed(width)
        x = torch.randn(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        dense = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, width=width).to(device)
        factorized = create_model("resnet20", num_classes=10, in_channels=3, image_size=32, width=width)
        convert_to_lowrank(factorized, conv="tucker", linear=None, rank_fraction=fraction)
        factorized.to(device)
        tag = f"gpu w{width}"
        _record_step_times(rec, tag, _step_times(x, y, dense, width, rounds, fraction))
        latencies = {}
        for label, model in (("dense", dense), ("factorized", factorized)):
            if device.type == "cuda":  # one standard training step from a reset high-water mark
                model.train()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                F.cross_entropy(model(x), y).backward()
                synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
                rec.add(f"{tag} peak_MiB_train {label}", peak / 2**20, unit="MiB")
                rec.add(f"{tag} step_MiB_train {label}", (peak - before) / 2**20, unit="MiB")
                model.zero_grad(set_to_none=True)
            latencies[label] = measure_latency(model, x, warmup=2, iters=rounds * 2).median_ms
            rec.add(f"{tag} inference_ms {label}", latencies[label], unit="ms")
        rec.add(f"{tag} inference_speedup factorized", latencies["dense"] / latencies["factorized"], unit="x")


def _cross_entropy_proxy(output: torch.Tensor) -> torch.Tensor:
    """Loss of the memory measurement: logits reduced like a cross-entropy on fixed labels."""
    return F.cross_entropy(output, torch.zeros(output.shape[0], dtype=torch.long, device=output.device))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and save ``benchmarks/results/tdlrt_speed.{json,md}``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_tdlrt_speed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--rank-fraction", type=float, default=0.2, help="Tucker channel ranks / channels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rec = BenchmarkRecorder("tdlrt_speed", argv if argv is not None else sys.argv[1:])
    widths, batch, rounds = ((16, 32, 64), 128, 3) if args.full else ((16,), 32, 2)
    rec.note(
        "settings",
        {
            "model": "resnet20, every conv but the first a Tucker conv (channel modes adaptive)",
            "ranks": f"converted with rank_fraction={args.rank_fraction}; rank_policy='fixed' while timing",
            "batch": batch,
            "rounds": rounds,
            "threads": args.threads,
            "optimizer": "SGD lr 0.01, momentum 0.9, weight decay 5e-4 (inner optimizer for TDLRT)",
            "peak memory": "one standard forward/backward/SGD step of each model in a fresh process",
        },
    )
    for width in widths:
        measure_width(rec, width, batch, rounds, args.rank_fraction)
    gpu_widths, gpu_rounds = ((16, 32, 64), 10) if args.full else ((16,), 3)
    gpu_section(rec, lambda device: measure_gpu(rec, device, gpu_widths, 128, gpu_rounds, args.rank_fraction))
    rec.save()
    print(rec.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
