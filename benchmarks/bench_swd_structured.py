"""Fidelity benchmark of structured SWD (docs/swd.md#baselines): channel pruning to parameter budgets.

Tessier et al. (arXiv:2011.10520) claim that structured SWD removes whole channels at high rates without
fine-tuning where pruning baselines lose accuracy. Compared, at equal total epochs, on a ResNet-8 with a
BatchNorm after every residual addition and 1×1-conv (B) shortcuts (``configs/fashion-mnist/resnet8-*``):

- ``resnet8-swd-structured``: SWD on the BatchNorm gates, hard channel pruning at the end, no fine-tuning;
- ``resnet8-swd-structured-f``: the same with the adjacent conv filters penalised too (``structuredF``);
- ``resnet8-network-slimming``: smooth-L1 on γ for half the run, pruning, masked fine-tuning (Liu et al.);
- ``resnet8-magnitude-ft-channels``: dense for half the run, channels with the smallest |γ| removed,
  masked fine-tuning (the baseline of the verdicts);
- ``resnet8-lr-rewinding-channels``: the same with the learning-rate schedule replayed (Renda et al.);
- ``resnet8-gmp-channels``: channels removed along the cubic schedule (Zhu & Gupta).

Every method prunes to the same parameter budgets — 50, 25, 10 and 5 % of the parameters kept (levels
0.5, 0.75, 0.9, 0.95 removed) — with the same bisection over the same gates, one training per budget and
seed. With ``--tune`` every method first gets the same tuning budget — five values of its key option
(``TUNING``), chosen by the validation accuracy after pruning at the smallest budget with seed 0, recorded in
``<name>_tuning.json``; without it every method keeps its recipe settings (an equal, zero, budget).

- ``--quick``: digits, width 4, 1 epoch, 1 seed, two budgets (a smoke run).
- ``--full``: Fashion-MNIST, width 8, 3 seeds, four budgets, ``--epochs`` epochs (default 1: 72 trainings of
  40–120 CPU-seconds each on this project's 2-core machine, 30 more with ``--tune``; the recipes say
  width 16 and 10 epochs). Another ``--width``, ``--epochs`` or ``--dataset`` (``mnist``: the recipes of
  ``configs/mnist/``), or ``--tune``, writes results ``swd_structured[_mnist][_w<W>][_<E>ep][_tuned]``
  (each part only when it differs from the default).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.fidelity import CONFIGS, fidelity_arguments, run_fidelity, save_tuning, tune_recipes

METHODS = (
    "swd-structured",
    "swd-structured-f",
    "network-slimming",
    "magnitude-ft-channels",
    "lr-rewinding-channels",
    "gmp-channels",
)
BASELINE = "resnet8-magnitude-ft-channels"
# The tuning budget of ``--tune``, the same for every method: five values of the option that decides how
# hard the method pushes towards the budget — SWD's final penalty, the slimming penalty λ, the number of
# prune/fine-tune rounds, and when GMP's cubic schedule reaches the budget.
TUNING: dict[str, tuple[str, list[float]]] = {
    "swd-structured": ("a_max", [1e2, 1e3, 1e4, 1e5, 1e6]),
    "swd-structured-f": ("a_max", [1e2, 1e3, 1e4, 1e5, 1e6]),
    "network-slimming": ("strength", [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]),
    "magnitude-ft-channels": ("iterations", [1, 2, 3, 5, 8]),
    "lr-rewinding-channels": ("iterations", [1, 2, 3, 5, 8]),
    "gmp-channels": ("end", [0.3, 0.5, 0.7, 0.8, 0.9]),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = fidelity_arguments(__doc__.splitlines()[0], datasets=True)
    parser.add_argument("--epochs", type=int, default=1, help="--full only: epochs of every run (default 1)")
    parser.add_argument("--width", type=int, default=8, help="--full only: ResNet-8 width (default 8)")
    parser.add_argument("--tune", action="store_true", help="give every method the tuning budget TUNING")
    args = parser.parse_args(argv)
    name = "swd_structured"
    dataset = args.dataset if args.full else "fashion-mnist"
    if args.full:
        # Other settings keep their own results and run folders next to the default run's.
        name += "" if dataset == "fashion-mnist" else f"_{dataset.replace('-', '_')}"
        name += "" if args.width == 8 else f"_w{args.width}"
        name += "" if args.epochs == 1 else f"_{args.epochs}ep"
        if not args.data_dir:
            print("--full needs --data-dir or $SLIMTRAIN_DATA_DIR", file=sys.stderr)
            return 2
        # By environment, so no absolute path enters the recorded overrides.
        os.environ["SLIMTRAIN_DATA_DIR"] = str(args.data_dir)
        seeds, levels = args.seeds or [0, 1, 2], [0.5, 0.75, 0.9, 0.95]
        overrides = [f"train.epochs={args.epochs}", f"model.kwargs.width={args.width}"]
    else:
        seeds, levels = args.seeds or [0], [0.5, 0.9]
        overrides = [
            "data.name=digits",
            "data.val_fraction=0.15",
            "model.kwargs.width=4",
            "train.epochs=1",
            "train.batch_size=64",
        ]
    overrides.append(f"evaluation.levels={levels}")
    name += "_tuned" if args.tune else ""
    recipes = [CONFIGS / dataset / f"resnet8-{method}.yaml" for method in METHODS]
    out = args.output or Path("runs/bench") / (name + ("" if args.full else "_quick"))
    tried: dict[str, object] = {}
    if args.tune:
        # --quick: two candidates per method (a smoke run of the tuning).
        grid = TUNING if args.full else {m: (opt, values[2:4]) for m, (opt, values) in TUNING.items()}
        recipes, tried = tune_recipes(recipes, grid, max(levels), overrides, out)
        out = out / "compare"
    status = run_fidelity(
        name,
        argv,
        recipes,
        baseline=BASELINE,
        overrides=overrides,
        seeds=seeds,
        output=out,
        notes={"tuning": f"{name}_tuning.json" if args.tune else "none for any method (recipe settings)"},
        module="bench_swd_structured",
    )
    if args.tune:
        epochs = args.epochs if args.full else 1
        tuning = {"epochs (every method, total)": epochs, "budget used for tuning": max(levels)}
        save_tuning(name, "full" if args.full else "quick", {**tuning, **tried})
    return status


if __name__ == "__main__":
    sys.exit(main())
