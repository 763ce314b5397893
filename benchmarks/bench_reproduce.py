"""Reproduction runs of the reference presets (``configs/reference/<paper>/``) on data available on a CPU.

``--paper P`` (one of sfw, dlrt, tdlrt, swd, nnbcd) trains P's preset with every faithful option as the
preset sets it, sweeps the trained model, and records the results beside the paper's or the reference
code's numbers. The presets name CIFAR-10 and large models; on a CPU the data, the model width and the
length are cut as :data:`PAPERS` says, so the reference numbers are context, not a target, unless the
setting is the same (stated in ``setting`` of each result). Each paper's full run is sized to a CPU budget
of about three minutes on two cores (``budget``).

- ``sfw``: the k-support preset on Fashion-MNIST with LeNet-5, 1 epoch, pruned once per level without
  retraining; beside it the same training with slimtrain's corrected defaults (initial shift, per-tensor
  radii from a seeded copy). The paper's tables are not in its repository: no reference numbers.
- ``dlrt``: the LeNet-5/MNIST preset (three-pass KLS, DLRT-Net truncation, SGD lr 0.05), 1 epoch of the
  reference's 20; DLRT-Net's result files (τ 0.11, 5 runs): 98.21 % test accuracy, 93.0 % eval c.r.
- ``tdlrt``: the RobustDLRT-practice preset (AdamW, clipping 1.0, local cycles of 10 restarting each
  epoch) with ResNet-8 (width 16) on Fashion-MNIST instead of VGG-16 on CIFAR-10, 1 epoch. No TDLRT table
  numbers are available: no reference numbers.
- ``swd``: the unstructured preset (MultiStep at E/3 and 2E/3, reference population, a from 0.1 to 1e5)
  with LeNet-5 on MNIST, 3 epochs (milestones 1 and 2), target 90 %. The paper's CIFAR-10 figures are
  context only.
- ``nnbcd``: the MLP4 TT preset (rank 80, γ = ρ = 0.5, τ = 5, no safeguard) on 5 % of MNIST's training
  split (3,000 samples; full batch), 10 sweeps of the reference's 500; the notebook's MLP4 (UCI-HAR)
  reached 96.0–96.8 % test accuracy.

``--quick`` (default): the same preset on synthetic data of its shape, narrowed, two steps (seconds).
Data directory (``--full``): ``--data-dir`` or ``SLIMTRAIN_DATA_DIR`` (the folder holding mnist/ and
fashion-mnist/). Results: ``reproduce_<paper>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkRecorder
from slimtrain.experiments.sweeping import sweep
from slimtrain.train.config import load_recipe
from slimtrain.train.trainer import Trainer

PRESETS = Path(__file__).resolve().parent.parent / "configs" / "reference"


@dataclass(frozen=True)
class Paper:
    """One paper's reproduction run: its preset, the CPU-scale overrides and the reference numbers.

    Attributes:
        preset: path below ``configs/reference``.
        full: overrides of the full (CPU-scale) run.
        quick: overrides of the smoke run (synthetic data of the preset's shape).
        setting: how the full run differs from the paper's setting.
        reference: the paper's or reference code's numbers, by quantity, and where they come from.
        variants: extra runs ``name → overrides`` trained and swept the same way.
        budget: the full run's CPU budget in seconds (process CPU time), including every variant.
    """

    preset: str
    full: list[str]
    quick: list[str]
    setting: str
    reference: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, list[str]] = field(default_factory=dict)
    budget: int = 180


_SYNTHETIC_CIFAR = "data.options={input_shape: [3, 32, 32], num_samples: 64, num_classes: 10}"
_SYNTHETIC_MNIST = "data.options={input_shape: [1, 28, 28], num_samples: 64, num_classes: 10}"
_QUICK = ["data.name=synthetic", "train.epochs=1", "train.max_steps=2", "train.batch_size=16"]

PAPERS: dict[str, Paper] = {
    "sfw": Paper(
        preset="sfw/resnet18-cifar10-ksupport.yaml",
        full=[
            "data.name=fashion-mnist",
            "data.augment=false",
            "model.name=lenet5",
            "model.kwargs={}",
            "train.epochs=1",
            "evaluation.levels=[0.5, 0.8, 0.9, 0.95]",
        ],
        quick=[*_QUICK, _SYNTHETIC_CIFAR, "model.kwargs.width=4", "method.options.n_draws=2"],
        setting="LeNet-5 on Fashion-MNIST, 1 epoch (the preset: ResNet-18 on CIFAR-10, 180 epochs)",
        reference={"note": "the paper's accuracy tables are not in the reference repository; none quoted"},
        variants={
            "corrected_defaults": [
                "method.options.initial_shift=true",
                "method.options.radius_lookup=per_tensor",
                "method.options.radius_draw=seeded",
            ]
        },
    ),
    "dlrt": Paper(
        preset="dlrt/lenet5-mnist.yaml",
        full=["train.epochs=1", "evaluation.levels=[0.11]"],
        quick=[*_QUICK, _SYNTHETIC_MNIST],
        setting="the preset's setting, 1 epoch of its 20, one seed",
        reference={
            "test_accuracy_percent": 98.21,
            "cr_eval_percent": 93.0,
            "cr_train_percent": 52.0,
            "dense_test_accuracy_percent": 98.82,
            "note": "DLRT-Net LeNet-5 result files, τ = 0.11, mean of 5 runs of 20 epochs",
        },
    ),
    "tdlrt": Paper(
        preset="tdlrt/vgg16-cifar10.yaml",
        full=[
            "data.name=fashion-mnist",
            "data.augment=false",
            "model.name=resnet8",
            "model.kwargs={width: 16}",
            "train.epochs=1",
        ],
        quick=[*_QUICK, _SYNTHETIC_CIFAR, "model.kwargs.width_multiplier=0.0625"],
        setting="ResNet-8 (width 16) on Fashion-MNIST, 1 epoch (the preset: VGG-16 on CIFAR-10, 20 epochs)",
        reference={"note": "no TDLRT table numbers are available (the experiment code is not public)"},
    ),
    "swd": Paper(
        preset="swd/resnet20-cifar10-unstructured.yaml",
        full=[
            "data.name=mnist",
            "data.augment=false",
            "model.name=lenet5",
            "model.kwargs={}",
            "train.epochs=3",
            "schedule.milestones=[1, 2]",
        ],
        quick=[*_QUICK, _SYNTHETIC_CIFAR, "model.kwargs.width=4"],
        setting="LeNet-5 on MNIST, 3 epochs, the preset's milestones at E/3 and 2E/3 (the reference code "
        "keeps the rate constant on MNIST; the preset: ResNet-20 at width 64 on CIFAR-10, 300 epochs)",
        reference={
            "cifar10_unstructured_0.1pct_kept_top1_percent": 81.32,
            "note": "arXiv:2011.10520 abstract, CIFAR-10 at 0.1 % kept (another model, data and level)",
        },
    ),
    "nnbcd": Paper(
        preset="nnbcd/mlp4-tt.yaml",
        full=["data.val_fraction=0.95", "train.epochs=10"],
        quick=[
            "data.name=synthetic",
            _SYNTHETIC_MNIST,
            "train.epochs=2",
            "model.kwargs.widths=[32, 32, 32, 16]",
        ],
        setting="MNIST, 3,000 training samples (val_fraction 0.95), 10 sweeps of the preset's 500 (the "
        "reference: UCI-HAR, 7,352 samples)",
        reference={
            "test_accuracy_percent_range": [96.0, 96.8],
            "note": "NN-BCD notebook outputs, MLP4 rank 80 on UCI-HAR across 8 initialisers (other data)",
        },
    ),
}

#: Sweep-row fields recorded per level (those a row has).
_ROW_FIELDS = {
    "acc_dense": "fraction",
    "acc_compressed_no_ft": "fraction",
    "sparsity_all": "fraction",
    "params_nonzero_all": "count",
    "cr_percent_eval_dlrt_convention": "%",
    "cr_percent_eval_factorized_only": "%",
    "cr_percent_train_dlrt": "%",
    "cr_percent_train_tucker": "%",
    "params_stored_all": "count",
}


def train_and_sweep(preset: Path, overrides: list[str], run_dir: Path) -> tuple[list[dict[str, Any]], dict]:
    """Train ``preset`` with ``overrides`` into ``run_dir`` (fresh) and sweep it; return rows and results."""
    shutil.rmtree(run_dir, ignore_errors=True)
    recipe = load_recipe(preset, [*overrides, "train.progress=false", "train.tensorboard=false"])
    results = Trainer(recipe, run_dir).fit()
    return sweep(run_dir, progress=False), results


def record(rec: BenchmarkRecorder, prefix: str, rows: list[dict[str, Any]], results: dict) -> None:
    """Add each row's accuracy and compression fields, and the run's final ranks, under ``prefix``."""
    for row in rows:
        level = row["requested_level"]
        for key, unit in _ROW_FIELDS.items():
            if row.get(key) is not None:
                rec.add(f"{prefix}{key} @ {level:g}", float(row[key]), unit)
    for key in ("ranks_per_layer", "grad_evals", "steps"):
        if key in results:
            rec.note(f"{prefix}{key}", results[key])


def main(argv: list[str] | None = None) -> int:
    """Run one paper's preset (``--paper``) in quick or full mode and save ``reproduce_<paper>``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="synthetic data, two steps (default)")
    mode.add_argument("--full", action="store_true", help="the CPU-scale run on real data")
    parser.add_argument("--paper", choices=sorted(PAPERS), nargs="+", default=sorted(PAPERS))
    parser.add_argument("--data-dir", default=os.environ.get("SLIMTRAIN_DATA_DIR"))
    parser.add_argument("--output", type=Path, default=Path("runs/bench/reproduce"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each run")
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    if args.full and not args.data_dir:
        parser.error("--full needs --data-dir or SLIMTRAIN_DATA_DIR (the folder holding mnist/)")
    if args.data_dir:
        os.environ["SLIMTRAIN_DATA_DIR"] = str(args.data_dir)
    for name in args.paper:
        paper = PAPERS[name]
        own_argv = [a for a in raw if a not in PAPERS and a != "--paper"] + ["--paper", name]
        rec = BenchmarkRecorder(f"reproduce_{name}", own_argv, module="bench_reproduce")
        rec.note("preset", f"configs/reference/{paper.preset}")
        rec.note("setting", paper.setting if args.full else "synthetic data of the preset's shape, 2 steps")
        rec.note("reference", paper.reference)
        rec.note("cpu_budget_seconds", paper.budget)
        overrides = [*(paper.full if args.full else paper.quick), f"train.threads={args.threads}"]
        started, cpu_started = time.perf_counter(), time.process_time()
        for variant, extra in {"": [], **paper.variants}.items():
            prefix = f"{variant}: " if variant else ""
            rows, results = train_and_sweep(
                PRESETS / paper.preset, [*overrides, *extra], args.output / name / (variant or "preset")
            )
            record(rec, prefix, rows, results)
            if variant:
                rec.note(f"{prefix}overrides", extra)
        rec.note("wall_seconds", round(time.perf_counter() - started, 1))
        rec.note("cpu_seconds", round(time.process_time() - cpu_started, 1))
        print(rec.to_markdown())
        rec.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
