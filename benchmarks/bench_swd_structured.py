"""Fidelity benchmark of structured SWD (spec ``swd.md`` §4): channel pruning to parameter budgets.

Tessier et al. (arXiv:2011.10520) claim that structured SWD removes whole channels at high rates without
fine-tuning where pruning baselines lose accuracy. Compared, at equal total epochs, on a ResNet-8 with a
BatchNorm after every residual addition and 1×1-conv (B) shortcuts (``configs/fashion-mnist/resnet8-*``):

- ``resnet8-swd-structured``: SWD on the BatchNorm gates, hard channel pruning at the end, no fine-tuning;
- ``resnet8-network-slimming``: smooth-L1 on γ for half the run, pruning, masked fine-tuning (Liu et al.);
- ``resnet8-magnitude-ft-channels``: dense for half the run, channels with the smallest |γ| removed,
  masked fine-tuning (the baseline of the verdicts);
- ``resnet8-lr-rewinding-channels``: the same with the learning-rate schedule replayed (Renda et al.);
- ``resnet8-gmp-channels``: channels removed along the cubic schedule (Zhu & Gupta).

Every method prunes to the same parameter budgets — 50, 25, 10 and 5 % of the parameters kept (levels
0.5, 0.75, 0.9, 0.95 removed) — with the same bisection over the same gates, one training per budget and
seed. No method is tuned (all keep their recipe settings): the same, zero, tuning budget for all.

- ``--quick``: digits, width 4, 1 epoch, 1 seed, two budgets (a smoke run).
- ``--full``: Fashion-MNIST, width 8, 3 seeds, four budgets, ``--epochs`` epochs (default 1: 60 trainings of
  about 2 CPU-minutes each on this project's 2-core machine; the recipes say width 16 and 10 epochs).
  Another ``--width`` or ``--epochs`` writes results ``swd_structured_w<W>_<E>ep`` (each part only when it
  differs from the default).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.fidelity import CONFIGS, fidelity_arguments, run_fidelity

METHODS = (
    "swd-structured",
    "network-slimming",
    "magnitude-ft-channels",
    "lr-rewinding-channels",
    "gmp-channels",
)
BASELINE = "resnet8-magnitude-ft-channels"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = fidelity_arguments(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="--full only: epochs of every run (default 1)")
    parser.add_argument("--width", type=int, default=8, help="--full only: ResNet-8 width (default 8)")
    args = parser.parse_args(argv)
    name = "swd_structured"
    if args.full:
        # Other sizes keep their own results and run folders next to the default run's.
        name += "" if args.width == 8 else f"_w{args.width}"
        name += "" if args.epochs == 1 else f"_{args.epochs}ep"
        if not args.data_dir:
            print("--full needs --data-dir or $SLIMTRAIN_DATA_DIR", file=sys.stderr)
            return 2
        # By environment, so no absolute path enters the recorded overrides.
        os.environ["SLIMTRAIN_DATA_DIR"] = str(args.data_dir)
        seeds = args.seeds or [0, 1, 2]
        overrides = [
            f"train.epochs={args.epochs}",
            f"model.kwargs.width={args.width}",
            "evaluation.levels=[0.5, 0.75, 0.9, 0.95]",
        ]
    else:
        seeds = args.seeds or [0]
        overrides = [
            "data.name=digits",
            "data.val_fraction=0.15",
            "model.kwargs.width=4",
            "train.epochs=1",
            "train.batch_size=64",
            "evaluation.levels=[0.5, 0.9]",
        ]
    recipes = [CONFIGS / "fashion-mnist" / f"resnet8-{method}.yaml" for method in METHODS]
    out = args.output or Path("runs/bench") / (name + ("" if args.full else "_quick"))
    return run_fidelity(
        name,
        argv,
        recipes,
        baseline=BASELINE,
        overrides=overrides,
        seeds=seeds,
        output=out,
        notes={"tuning": "none for any method (recipe settings)"},
    )


if __name__ == "__main__":
    sys.exit(main())
