"""Time of ``optimizer.step()`` for SFW with every constraint family against SGD with momentum.

Model: the CIFAR ResNet-20 (59 parameter tensors, 0.27 M parameters), gradients set once to random
values, so only the optimizer is timed. Side by side in one run:

- ``sgd``: ``torch.optim.SGD(momentum=0.9)``;
- ``sfw_<set>``: :class:`slimtrain.fw.SFW` with the sets of :func:`slimtrain.fw.build_constraints`
  (k = 30%): k-support and K-sparse on every tensor, group k-support on convs, spectral k-support
  (exact and randomized power solver) and nuclear ball on convs;
- ``sfw_<set>_torch`` for k-support and K-sparse: the same optimizer with the compiled selection kernel
  disabled (:func:`slimtrain.fw.native.disabled`), i.e. ``torch.topk``, gather and scatter per bucket;
- ``per_tensor_k_support``: the same SFW k-support update written as one Python-level LMO per tensor with
  torch operations (the structure of the reference code), to show what batching the tensors saves.

Each round times a run of consecutive steps of every optimizer in turn (interleaved, so that drift in the
machine's speed affects all alike) and records the mean per step. The issue's targets: ``step()`` ≤ 6 ms
for k-support and K-sparse, and the exact spectral k-support LMO ≤ 14 ms summed over the convs. ``--full``
uses 20 rounds and adds a whole training step (forward, backward, step; batch 128) for SGD and SFW k-support.

GPU section (when CUDA is available; otherwise the note ``gpu_section`` says it was skipped): the same
optimizers on the model on the GPU (the compiled selection kernel is CPU-only, so the LMOs run on torch
operations there), timed between ``torch.cuda.synchronize()`` calls, plus a whole training step at batch 128
for SGD and SFW k-support; quantities ``gpu step_ms_*`` and ``gpu train_step_ms_*``, ratios to SGD in the
notes ``gpu_median_ratio_to_sgd`` and ``gpu_train_step_ratio_sfw_k_support_to_sgd``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.harness import BenchmarkRecorder, gpu_section, interleaved_time_ms
from slimtrain.fw import SFW, KSupportNormBall, build_constraints, native
from slimtrain.models import create_model

SFW_CONFIGS: dict[str, dict] = {
    "k_support": {"mode": "unstructured", "constraint": "k_support"},
    "k_sparse": {"mode": "unstructured", "constraint": "k_sparse"},
    "group_k_support": {"mode": "filter"},
    "spectral_k_support_exact": {"mode": "lowrank"},
    "spectral_k_support_power": {"mode": "lowrank", "spectral_solver": "power"},
    "nuclear_exact": {"mode": "lowrank", "constraint": "nuclear"},
}


def _interleaved_round_ms(
    steps_by_name: dict[str, Callable[[], object]], rounds: int, steps: int
) -> dict[str, list[float]]:
    """Mean ms per step of every optimizer in each round, the optimizers taking turns within a round."""
    for step in steps_by_name.values():
        for _ in range(3):
            step()
    values: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            values[name].append((time.perf_counter() - start) * 1e3 / steps)
    return values


def _per_tensor_k_support(model: nn.Module, k: float, lr: float = 0.1, mu: float = 0.9) -> Callable[[], None]:
    """SFW k-support step with one LMO and one kernel chain per tensor (the reference code's structure).

    Timed through :func:`_without_kernel`, so the LMO runs on torch operations as in the reference.
    """
    params = list(model.parameters())
    sets = [KSupportNormBall(p.numel(), max(1, int(k * p.numel())), 1.0) for p in params]
    bufs = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step() -> None:
        for p, c, m in zip(params, sets, bufs, strict=True):
            m.mul_(mu).add_(p.grad)
            v = c.lmo(m)
            gamma = min(max(lr * (m.norm() / (p - v).norm()).item(), 0.0), 1.0)
            p.mul_(1 - gamma).add_(v, alpha=gamma)

    return step


def _without_kernel(step: Callable[[], object]) -> Callable[[], None]:
    """``step`` with the LMOs on torch operations instead of the compiled selection kernel."""

    def run() -> None:
        with native.disabled():
            step()

    return run


def measure_gpu(rec: BenchmarkRecorder, device: torch.device, rounds: int, steps: int, batch: int) -> None:
    """Record the GPU section: every optimizer's step and a whole training step, on ``device``."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32).to(device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    optimizers: dict[str, torch.optim.Optimizer] = {"sgd": torch.optim.SGD(params, lr=0.1, momentum=0.9)}
    for name, cfg in SFW_CONFIGS.items():
        optimizers[name] = SFW(build_constraints(model, k=0.3, n_draws=5, **cfg), lr=0.1)
    times = interleaved_time_ms({k: opt.step for k, opt in optimizers.items()}, device, rounds, steps)
    medians = {}
    for name, values in times.items():
        medians[name] = rec_add(rec, f"gpu step_ms_{'sgd' if name == 'sgd' else f'sfw_{name}'}", values)
    rec.note("gpu_median_ratio_to_sgd", {k: round(v / medians["sgd"], 2) for k, v in medians.items()})

    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def train_step(opt: torch.optim.Optimizer) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        return run

    train = {"sgd": train_step(optimizers["sgd"]), "sfw_k_support": train_step(optimizers["k_support"])}
    for name, values in interleaved_time_ms(train, device, rounds, steps).items():
        medians[f"train_{name}"] = rec_add(rec, f"gpu train_step_ms_{name}", values)
    rec.note(
        "gpu_train_step_ratio_sfw_k_support_to_sgd",
        round(medians["train_sfw_k_support"] / medians["train_sgd"], 3),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sfw_step", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="5 rounds of 10 steps (default)")
    mode.add_argument("--full", action="store_true", help="20 rounds of 20 steps, plus whole training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rounds, steps = (20, 20) if args.full else (5, 10)
    rec = BenchmarkRecorder("sfw_step", argv)

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    rec.note("tensors", len(params))
    rec.note("parameters", sum(p.numel() for p in params))
    rec.note("k", 0.3)
    rec.note("targets_ms", {"k_support": 6.0, "k_sparse": 6.0, "spectral_k_support_exact": 14.0})

    steps_by_name: dict[str, Callable[[], object]] = {
        "sgd": torch.optim.SGD(params, lr=0.1, momentum=0.9).step
    }
    for name, cfg in SFW_CONFIGS.items():
        steps_by_name[name] = SFW(build_constraints(model, k=0.3, n_draws=5, **cfg), lr=0.1).step
    for name in ("k_support", "k_sparse"):
        steps_by_name[f"{name}_torch"] = _without_kernel(
            SFW(build_constraints(model, k=0.3, n_draws=5, **SFW_CONFIGS[name]), lr=0.1).step
        )
    steps_by_name["per_tensor"] = _without_kernel(_per_tensor_k_support(model, 0.3))
    medians = {}
    for name, values in _interleaved_round_ms(steps_by_name, rounds, steps).items():
        quantity = (
            "step_ms_sgd"
            if name == "sgd"
            else ("step_ms_per_tensor_k_support" if name == "per_tensor" else f"step_ms_sfw_{name}")
        )
        medians[name] = rec_add(rec, quantity, values)
    rec.note("median_ratio_to_sgd", {k: round(v / medians["sgd"], 2) for k, v in medians.items()})
    rec.note("batched_speedup_k_support", round(medians["per_tensor"] / medians["k_support"], 2))
    rec.note("kernel_speedup_k_support", round(medians["k_support_torch"] / medians["k_support"], 2))
    rec.note("kernel_speedup_k_sparse", round(medians["k_sparse_torch"] / medians["k_sparse"], 2))

    if args.full:
        x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
        train_steps: dict[str, Callable[[], None]] = {}
        for name, opt in (
            ("sgd", torch.optim.SGD(params, lr=0.1, momentum=0.9)),
            ("sfw_k_support", SFW(build_constraints(model, k=0.3, n_draws=5), lr=0.1)),
        ):

            def train_step(opt: torch.optim.Optimizer = opt) -> None:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()

            train_steps[name] = train_step
        for name, values in _interleaved_round_ms(train_steps, 5, 5).items():
            rec.add(f"train_step_ms_{name}", values, unit="ms")
        full = rec.summary
        rec.note(
            "train_step_ratio_sfw_k_support_to_sgd",
            round(full["train_step_ms_sfw_k_support"]["median"] / full["train_step_ms_sgd"]["median"], 3),
        )

    gpu_rounds, gpu_steps = (20, 20) if args.full else (3, 10)
    gpu_section(rec, lambda device: measure_gpu(rec, device, gpu_rounds, gpu_steps, batch=128))
    path = rec.save()
    print(rec.to_markdown())
    print(f"saved {path}")
    return 0


def rec_add(rec: BenchmarkRecorder, quantity: str, values: list[float]) -> float:
    """Record per-round step times and return their median."""
    rec.add(quantity, values, unit="ms")
    return rec.summary[quantity]["median"]


if __name__ == "__main__":
    raise SystemExit(main())
