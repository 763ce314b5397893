"""The papers' headline settings on CIFAR-10, as recipes: plan, step times, runs reused across sessions.

Every run is a recipe trained by ``slimtrain train`` and swept by ``slimtrain sweep`` (one command each,
printed by ``--dry-run``, which also writes the recipes they read to ``<runs-dir>/recipes/``), except
NN-BCD's CNN, which is a benchmark command (the ``nnbcd`` method trains MLPs only). The campaign:

- **SFW** (Zimmer, Spiegel, Pokutta, arXiv:2205.11921, §4): ResNet-56, 180 epochs (Miao et al.'s budget),
  SFW with k-support balls (k = 30 %, τ = 10, "sum" momentum, lr 0.1, gradient rescaling) against Miao et
  al.'s K-sparse polytope (K = 5 %, τ = 15, "ema" momentum, lr 1.0) and SGD; one run each, compressed after
  training at every sparsity by global magnitude pruning.
- **SWD** (Tessier et al., arXiv:2011.10520, §4): ResNet-20 and ResNet-56 (width 16), 300 epochs, lr 0.1
  divided by 10 at 1/3 and 2/3, a from 0.1 to 1e5; unstructured at 90 / 95 / 99 / 99.5 % removed and
  structured (BatchNorm-gated channels under a parameter budget) at 50 / 70 / 90 %; one run per target.
- **TDLRT** (Zangrando et al., arXiv:2305.19059, §5): ResNet-20 and VGG-16-BN, 100 epochs, τ ∈ {0.1, 0.2,
  0.3} (chosen to bracket 80–95 % compression; the rate each τ reaches is measured by the run), against
  fixed-rank Tucker factorizations at rank fractions 0.3 / 0.2 / 0.15 (about 84 / 91 / 94 % compression of
  the factorized convolutions).
- **NN-BCD** (Li et al., arXiv:2303.06815, §5): the paper's CNN (conv3×3/s2 ×32 → 5408 → 1024 → 1024 → 10,
  both hidden layers in TT format, ranks 40–300, 2,000 iterations) on its own data, a 10 % subset of MNIST:
  the paper has no CIFAR setting.

Data: CIFAR-10 from ``--data-dir`` or ``$SLIMTRAIN_DATA_DIR`` (see ``docs/data.md``); when it is absent the
recipes use synthetic CIFAR-shaped data (50,000 + 10,000 images 3×32×32, 10 classes, no augmentation)
and every table says so: such runs measure step times, not the papers' accuracies.

Results accumulate across sessions and machines in ``benchmarks/results/paper_scale_runs.json``: a run is
done when its run directory holds a finished run of the same recipe (same recipe digest, see
``slimtrain.train.identity``) or the file already records one; a finished run of another recipe in its
directory is reported and left alone (``slimtrain train`` would refuse it too). Step times per setting and
device are in ``benchmarks/results/paper_scale_step_times.json``, measured by ``--measure-steps`` on
synthetic CIFAR-shaped batches; the GPU-hours column is the GPU step time × the run's steps, shown only
when a GPU step time was measured (with the GPU's name); otherwise it says "not measured" and shows the
CPU step time, never a CPU-to-GPU extrapolation.

    python -m benchmarks.paper_scale --dry-run    # the plan, also in benchmarks/results/paper_scale_plan.md
    python -m benchmarks.paper_scale --measure-steps 3 --device cuda --only resnet20
    python -m benchmarks.paper_scale --device cuda --only swd    # train and sweep what is not done
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import DEFAULT_RESULTS_DIR, cpu_model, git_commit
from slimtrain.data.files import find_dataset_dir
from slimtrain.errors import DatasetNotFoundError
from slimtrain.train.config import Recipe, recipe_from_dict
from slimtrain.train.identity import is_finished, recipe_digest, run_identity

PLAN_FILE = "paper_scale_plan.md"
RUNS_FILE = "paper_scale_runs.json"
STEP_TIMES_FILE = "paper_scale_step_times.json"

TRAIN_SAMPLES, TEST_SAMPLES, VAL_FRACTION, BATCH = 50_000, 10_000, 0.1, 128
STEPS_PER_EPOCH = math.ceil(round(TRAIN_SAMPLES * (1 - VAL_FRACTION)) / BATCH)
"""Batches per epoch on one process: 45,000 training images (5,000 held out for validation) at batch 128."""

CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
UNSTRUCTURED_LEVELS = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]

_SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4}


@dataclass(frozen=True)
class Run:
    """One planned run: a recipe (without its data section), or a benchmark command when ``command`` is set.

    Attributes:
        paper: the paper (and what of it) the run belongs to.
        name: run name, also its directory under the runs folder.
        recipe: the recipe's sections other than ``name``, ``data`` and ``output_dir``.
        level: the compression level the run targets, in words.
        command: for a run that is not a recipe, its command (its results are its benchmark's files).
        results_file: for such a run, the results file that says it is done.
    """

    paper: str
    name: str
    recipe: dict[str, Any] = field(default_factory=dict)
    level: str = ""
    command: str | None = None
    results_file: str | None = None

    @property
    def epochs(self) -> int | None:
        """Training epochs of a recipe run."""
        return self.recipe["train"]["epochs"] if self.recipe else None

    @property
    def steps(self) -> int | None:
        """Training steps of a recipe run on one process."""
        return self.epochs * STEPS_PER_EPOCH if self.recipe else None

    @property
    def setting(self) -> str | None:
        """What the step time depends on: model, method and the options that change the work per step."""
        if not self.recipe:
            return None
        model, method = self.recipe["model"], self.recipe["method"]
        kwargs = ",".join(f"{k}={v}" for k, v in sorted(model.get("kwargs", {}).items()))
        cost = {k: v for k, v in method.get("options", {}).items() if k in ("constraint", "conv_format")}
        extra = ",".join(f"{k}={v}" for k, v in sorted(cost.items()))
        return f"{model['name']}({kwargs}) {method['name']}({extra})"


def _recipe(
    model: str,
    method: str,
    options: dict,
    epochs: int,
    evaluation: dict,
    *,
    optimizer=None,
    schedule=None,
    **kw,
) -> dict[str, Any]:
    return {
        "seed": 0,
        "model": {"name": model, "kwargs": kw},
        "method": {"name": method, "options": options},
        "optimizer": optimizer or _SGD,
        "schedule": schedule or {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": BATCH, "progress": False, "checkpoint_every_steps": 2000},
        "evaluation": evaluation,
    }


def planned_runs() -> list[Run]:
    """Every run of the campaign, in the order of the table."""
    runs: list[Run] = []
    sfw = "SFW (Zimmer et al.)"
    unstructured = {"structure": "unstructured", "levels": UNSTRUCTURED_LEVELS}
    linear = {"name": "linear"}
    runs.append(
        Run(
            sfw,
            "resnet56-sgd",
            _recipe("resnet56", "dense", {}, 180, unstructured, schedule=linear),
            "0–99 %",
        )
    )
    for name, options, lr in (
        ("k-support", {"constraint": "k_support", "k": 0.3, "tau": 10, "momentum_convention": "sum"}, 0.1),
        (
            "k-sparse",
            {"constraint": "k_sparse", "k": 0.05, "k_min": 10, "tau": 15, "momentum_convention": "ema"},
            1.0,
        ),
    ):
        optimizer = {**_SGD, "lr": lr, "weight_decay": 0.0}
        recipe = _recipe(
            "resnet56",
            "sfw",
            {**options, "rescale": "gradient"},
            180,
            unstructured,
            optimizer=optimizer,
            schedule=linear,
        )
        runs.append(Run(sfw, f"resnet56-sfw-{name.replace('-', '')}", recipe, "0–99 %"))

    swd = "SWD (Tessier et al.)"
    multistep = {"name": "multistep", "milestones": [100, 200], "gamma": 0.1}
    for model in ("resnet20", "resnet56"):
        for target in (0.9, 0.95, 0.99, 0.995):
            recipe = _recipe(
                model,
                "swd",
                {"target": target, "a_min": 0.1, "a_max": 1.0e5},
                300,
                {"structure": "native", "levels": [target]},
                schedule=multistep,
            )
            runs.append(Run(swd, f"{model}-swd-{target * 100:g}", recipe, f"{target * 100:g} % removed"))
        for target in (0.5, 0.7, 0.9):
            recipe = _recipe(
                model,
                "swd-structured",
                {"target": target, "a_min": 0.1, "a_max": 1.0e5},
                300,
                {"structure": "native", "levels": [target]},
                schedule=multistep,
                bn_after_add=True,
                shortcut="B",
            )
            runs.append(
                Run(
                    swd,
                    f"{model}-swd-structured-{target * 100:g}",
                    recipe,
                    f"{target * 100:g} % of parameters removed",
                )
            )

    tdlrt = "TDLRT (Zangrando et al.)"
    lowrank_sgd = {**_SGD, "lr": 0.05}
    for model in ("resnet20", "vgg16_bn"):
        for tau in (0.1, 0.2, 0.3):
            recipe = _recipe(
                model,
                "tdlrt",
                {"tau": tau, "max_grad_norm": 1.0},
                100,
                {"structure": "native", "levels": [tau]},
                optimizer=lowrank_sgd,
            )
            runs.append(Run(tdlrt, f"{model}-tdlrt-tau{tau:g}", recipe, f"τ = {tau:g}"))
        for fraction in (0.3, 0.2, 0.15):
            recipe = _recipe(
                model,
                "fixed-rank",
                {"rank_fraction": fraction, "conv_format": "tucker"},
                100,
                {"structure": "native", "levels": [fraction]},
                optimizer=lowrank_sgd,
            )
            runs.append(
                Run(tdlrt, f"{model}-fixed-rank-{fraction:g}", recipe, f"ranks {fraction:g} × channels")
            )

    nnbcd_command = (
        "python -m benchmarks.bench_nnbcd_mnist --full --arch cnn --ranks 40 80 140 220 300 "
        "--iterations 2000 --suffix _paper_scale_cnn"
    )
    runs.append(
        Run(
            "NN-BCD (Li et al.)",
            "nnbcd-cnn-mnist10pct",
            level="TT ranks 40–300",
            command=nnbcd_command,
            results_file="nnbcd_mnist_paper_scale_cnn.json",
        )
    )
    return runs


def cifar10_dir(data_dir: str | None) -> Path | None:
    """The directory holding CIFAR-10's python archive files, or ``None`` when it is not found."""
    try:
        return find_dataset_dir(
            "cifar10",
            data_dir,
            lambda d: [n for n in CIFAR_FILES if not (d / n).is_file()],
            how_to_get="",
            subdirs=["cifar-10-batches-py"],
        )
    except DatasetNotFoundError:
        return None


def data_section(cifar: Path | None) -> dict[str, Any]:
    """CIFAR-10 with its standard augmentation, or synthetic CIFAR-shaped data when it is absent."""
    if cifar is not None:
        return {"name": "cifar10", "data_dir": str(cifar), "val_fraction": VAL_FRACTION, "augment": True}
    options = {
        "num_samples": TRAIN_SAMPLES,
        "input_shape": [3, 32, 32],
        "num_classes": 10,
        "num_test": TEST_SAMPLES,
    }
    return {"name": "synthetic", "val_fraction": VAL_FRACTION, "options": options}


def build_recipe(run: Run, data: dict[str, Any], runs_dir: Path) -> Recipe:
    """The validated recipe of a recipe run (method options resolved by the method's schema)."""
    return recipe_from_dict({"name": run.name, "output_dir": str(runs_dir), "data": data, **run.recipe})


def commands(run: Run, runs_dir: Path, device: str) -> str:
    """The shell command(s) that train and sweep ``run`` (or its benchmark command)."""
    if run.command is not None:
        return run.command
    recipe, run_dir = runs_dir / "recipes" / f"{run.name}.yaml", runs_dir / run.name
    train = [
        "slimtrain",
        "train",
        str(recipe),
        "--run-dir",
        str(run_dir),
        "--resume",
        "--set",
        f"train.device={device}",
    ]
    return f"{shlex.join(train)} && {shlex.join(['slimtrain', 'sweep', str(run_dir)])}"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def status(run: Run, recipe: Recipe | None, runs_dir: Path, ledger: dict[str, Any], results_dir: Path) -> str:
    """``done``, ``done (recorded)``, ``conflict: ...``, ``partial`` or ``to run``."""
    if recipe is None:
        return "done" if (results_dir / run.results_file).is_file() else "to run"
    digest = recipe_digest(recipe)
    run_dir = runs_dir / run.name
    if is_finished(run_dir):
        identity = run_identity(run_dir)
        if identity is not None and identity.recipe_digest == digest:
            return "done"
        return "conflict: its directory holds a finished run of another recipe"
    if ledger.get(run.name, {}).get("recipe_digest") == digest:
        return "done (recorded)"
    return "partial" if (run_dir / "checkpoints").is_dir() else "to run"


def device_name(device: torch.device) -> str:
    """The name a step time is recorded under: the GPU's, or the CPU model's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_model()}"


def gpu_hours(run: Run, step_times: dict[str, Any]) -> str:
    """GPU-hours from a measured GPU step time, or "not measured" with the CPU step time when there is one."""
    if run.setting is None:
        return "not measured"
    measured = step_times.get(run.setting, {})
    gpus = {name: m for name, m in measured.items() if m["kind"] == "cuda"}
    if gpus:
        name, m = sorted(gpus.items())[0]
        return f"{m['step_ms'] * run.steps / 3.6e6:.1f} ({name}, {m['step_ms']:.0f} ms/step)"
    cpus = {name: m for name, m in measured.items() if m["kind"] == "cpu"}
    if cpus:
        _, m = sorted(cpus.items())[0]
        return f"not measured (CPU: {m['step_ms']:.0f} ms/step)"
    return "not measured"


def plan_table(
    runs: Iterable[Run], data: dict[str, Any], runs_dir: Path, device: str, results_dir: Path
) -> list[str]:
    """The markdown table of every run: paper, setting, level, steps, GPU-hours, status and command."""
    ledger, step_times = _load(results_dir / RUNS_FILE), _load(results_dir / STEP_TIMES_FILE)
    lines = [
        "| # | paper | run | model | method | level | epochs | steps | GPU-hours | status | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(runs, 1):
        recipe = build_recipe(run, data, runs_dir) if run.recipe else None
        model = run.recipe["model"]["name"] if recipe else "cnn (bench_nnbcd_mnist)"
        method = run.recipe["method"]["name"] if recipe else "nnbcd"
        cells = [
            str(index),
            run.paper,
            run.name,
            model,
            method,
            run.level,
            str(run.epochs or "2,000 iterations"),
            f"{run.steps:,}" if run.steps else "—",
            gpu_hours(run, step_times),
            status(run, recipe, runs_dir, ledger, results_dir),
            f"`{commands(run, runs_dir, device)}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def describe_data(data: dict[str, Any]) -> str:
    """One line saying which data the recipes use."""
    if data["name"] == "cifar10":
        return (
            "CIFAR-10 (found), standard augmentation (random crop 4 + flip), 5,000 training images held out"
        )
    return (
        "**synthetic CIFAR-shaped data** (CIFAR-10 was not found: give `--data-dir` or set "
        "`SLIMTRAIN_DATA_DIR`): 50,000 + 10,000 images 3×32×32, 10 classes, no augmentation. These runs "
        "measure step times and exercise the pipeline; their accuracies are not the papers'"
    )


def write_recipes(runs: Iterable[Run], data: dict[str, Any], runs_dir: Path) -> None:
    """Write each recipe run's resolved recipe to ``<runs_dir>/recipes/<name>.yaml``, read by its command."""
    folder = runs_dir / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if run.recipe:
            (folder / f"{run.name}.yaml").write_text(build_recipe(run, data, runs_dir).to_yaml())


def measure_steps(
    runs: list[Run], data: dict[str, Any], device: torch.device, steps: int, results_dir: Path
) -> None:
    """Time ``steps`` training steps (after one warm-up step) of each setting on ``device`` and record them.

    Each setting is trained twice by the trainer on a synthetic CIFAR-shaped split just large enough, for
    1 and for ``1 + steps`` steps; the difference of the two runs' training seconds over ``steps`` is the
    step time (start-up, the first step's allocations and the evaluation are left out).
    """
    from slimtrain.train.trainer import Trainer  # only here: planning needs no training machinery

    path = results_dir / STEP_TIMES_FILE
    recorded = _load(path)
    settings = {run.setting: run for run in runs if run.setting is not None}
    for setting, run in settings.items():
        seconds = []
        for total in (1, 1 + steps):
            small = {**data_section(None), "val_fraction": 0.0}
            small["options"] = {**small["options"], "num_samples": BATCH * total, "num_test": BATCH}
            with tempfile.TemporaryDirectory() as tmp:
                recipe = build_recipe(run, small, Path(tmp)).model_copy(deep=True)
                recipe.train.epochs, recipe.train.max_steps = 1, total
                recipe.train.device, recipe.train.tensorboard = device.type, False
                seconds.append(Trainer(recipe, Path(tmp) / "run").fit()["train_seconds"])
        step_ms = (seconds[1] - seconds[0]) * 1e3 / steps
        recorded.setdefault(setting, {})[device_name(device)] = {
            "kind": device.type,
            "step_ms": round(step_ms, 1),
            "steps_timed": steps,
            "batch": BATCH,
            "torch": torch.__version__,
            "commit": git_commit(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "load_average_1min": os.getloadavg()[0],
        }
        _save(path, recorded)
        print(f"{setting}: {step_ms:.0f} ms/step on {device_name(device)}", flush=True)


def execute(runs: list[Run], data: dict[str, Any], runs_dir: Path, device: str, results_dir: Path) -> int:
    """Train and sweep every run not done yet, recording each finished one; returns the number that failed."""
    write_recipes(runs, data, runs_dir)
    path = results_dir / RUNS_FILE
    failed = 0
    for run in runs:
        ledger = _load(path)
        recipe = build_recipe(run, data, runs_dir) if run.recipe else None
        state = status(run, recipe, runs_dir, ledger, results_dir)
        if state.startswith(("done", "conflict")):
            print(f"{run.name}: {state}", flush=True)
            if state == "done" and recipe is not None and run.name not in ledger:
                _record(path, run, recipe, runs_dir / run.name, data, device)
            continue
        print(f"{run.name}: {commands(run, runs_dir, device)}", flush=True)
        if subprocess.run(commands(run, runs_dir, device), shell=True, check=False).returncode != 0:
            failed += 1
        elif recipe is not None:
            _record(path, run, recipe, runs_dir / run.name, data, device)
    return failed


def _record(path: Path, run: Run, recipe: Recipe, run_dir: Path, data: dict[str, Any], device: str) -> None:
    """Add a finished run's identity and results to the ledger."""
    identity = run_identity(run_dir, recipe)
    if identity is None:
        return
    results = _load(run_dir / "results.json")
    sweeps = {p.stem: json.loads(p.read_text()) for p in sorted(run_dir.glob("sweep-*.json"))}
    ledger = _load(path)
    ledger[run.name] = {
        **identity.as_dict(),
        "data": data["name"],
        "device": device,
        "results": {k: results.get(k) for k in ("val_accuracy", "test_accuracy", "steps", "train_seconds")},
        "sweeps": sweeps,
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _save(path, ledger)


def main(argv: list[str] | None = None) -> int:
    """Print or write the plan, measure step times, or run what is not done; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paper_scale", description=__doc__.split("\n")[0]
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--dry-run", action="store_true", help="print every run and its command; write the plan"
    )
    what.add_argument(
        "--measure-steps", type=int, metavar="N", help="time N steps of each setting on --device"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--data-dir", default=None, help="where CIFAR-10 is (default: $SLIMTRAIN_DATA_DIR)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/paper_scale"))
    parser.add_argument("--only", default=None, help="only runs whose name contains this text")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available() and not args.dry_run:  # a plan may target a GPU
        parser.error("--device cuda: CUDA is not available here")
    runs = [r for r in planned_runs() if args.only is None or args.only in r.name]
    data = data_section(cifar10_dir(args.data_dir))
    if args.measure_steps is not None:
        if args.measure_steps < 1:
            parser.error("--measure-steps must be at least 1")
        measure_steps(runs, data, torch.device(device), args.measure_steps, args.results_dir)
        return 0
    if not args.dry_run:
        return 1 if execute(runs, data, args.runs_dir, device, args.results_dir) else 0
    write_recipes(runs, data, args.runs_dir)
    lines = [
        "# Paper-scale campaign on CIFAR-10: the plan",
        "",
        f"Generated by `python -m benchmarks.paper_scale --dry-run --device {device}` "
        f"(commit `{git_commit()}`).",
        f"Data: {describe_data(data)}.",
        f"Steps: {STEPS_PER_EPOCH} per epoch (batch {BATCH}, one process). GPU-hours: measured GPU step "
        'time × steps, with the GPU\'s name; "not measured" shows the CPU step time measured here instead '
        "(`--measure-steps`), which is not converted into GPU time.",
        "",
        *plan_table(runs, data, args.runs_dir, device, args.results_dir),
        "",
        "Notes: levels are what each run targets; the compression each run reaches (TDLRT's at each τ "
        "included) is in its sweep. NN-BCD's CNN is not a recipe (the `nnbcd` method trains MLPs): its "
        "command is the benchmark's, on the 10 % MNIST subset of the paper (MNIST files needed, "
        "`--data-dir` or `SLIMTRAIN_DATA_DIR`); that benchmark has no device option, so its solver runs "
        "on the CPU, and `--device` does not apply to it.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.only is None:
        (args.results_dir / PLAN_FILE).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
