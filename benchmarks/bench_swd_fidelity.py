"""Fidelity benchmark of SWD (docs/swd.md#baselines): SWD against pruning baselines at equal total epochs.

Unstructured targets 90–99.5 % removed on one model, several seeds: SWD (hard pruning at the end, no
fine-tuning) against magnitude pruning + fine-tuning (Han et al.), learning-rate rewinding (Renda et al.) and
gradual magnitude pruning (Zhu & Gupta), every method training for the same number of epochs in total (the
baselines prune and fine-tune inside that budget). Before the comparison every method gets the same small
tuning budget — five values of its key hyperparameter (``TUNING``), chosen by the validation accuracy after
pruning at the hardest target with seed 0 — and the values tried and their validation accuracies are
recorded (``<name>_tuning.json``).

- ``--quick``: digits MLP, few epochs, one seed, two targets (a smoke run).
- ``--full``: Fashion-MNIST, LeNet-300-100 MLP, 3 seeds, five targets; fewer epochs than the recipes so the
  run fits about 45 CPU-minutes (the epoch count is recorded). Needs ``--data-dir`` or
  ``$SLIMTRAIN_DATA_DIR``. ``--epochs N`` trains every method N epochs instead (results
  ``swd_fidelity_<N>ep``), to see how the ordering changes with the training budget; ``--model lenet5``
  runs the ``lenet5-*`` recipes (LeNet-5) instead of the MLP; ``--dataset mnist`` the recipes of
  ``configs/mnist/`` (results ``swd_fidelity_mnist…``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.fidelity import CONFIGS, fidelity_arguments, run_fidelity, save_tuning, tune_recipes

METHODS = ("swd", "magnitude-ft", "lr-rewinding", "gmp")
# The tuning budget, the same for every method: five values of the option that decides how hard the method
# can push sparsity — SWD's final penalty, the number of prune/fine-tune rounds of Han et al. and of Renda
# et al., and when GMP's cubic schedule reaches the target.
TUNING: dict[str, tuple[str, list[float]]] = {
    "swd": ("a_max", [1e3, 1e4, 1e5, 1e6, 1e7]),
    "magnitude-ft": ("iterations", [1, 2, 3, 5, 8]),
    "lr-rewinding": ("iterations", [1, 2, 3, 5, 8]),
    "gmp": ("end", [0.3, 0.5, 0.7, 0.8, 0.9]),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = fidelity_arguments(__doc__.splitlines()[0], datasets=True)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="--full only: epochs per run (default 6; results swd_fidelity_<N>ep)",
    )
    parser.add_argument(
        "--model",
        choices=("mlp", "lenet5"),
        default="mlp",
        help="the model of the recipes (lenet5: results swd_fidelity_lenet5[_<N>ep])",
    )
    args = parser.parse_args(argv)
    dataset = args.dataset if args.full else "fashion-mnist"
    name = "swd_fidelity" + ("" if dataset == "fashion-mnist" else f"_{dataset.replace('-', '_')}")
    name += "" if args.model == "mlp" else f"_{args.model}"
    name += "" if args.epochs is None else f"_{args.epochs}ep"
    out = args.output or Path("runs/bench") / (name + ("" if args.full else "_quick"))
    folder, model, baseline = CONFIGS / dataset, args.model, f"{args.model}-magnitude-ft"
    if args.full:
        if not args.data_dir:
            print("--full needs --data-dir or $SLIMTRAIN_DATA_DIR", file=sys.stderr)
            return 2
        seeds = args.seeds or [0, 1, 2]
        epochs, levels = args.epochs or 6, [0.9, 0.95, 0.98, 0.99, 0.995]
        tuning_grid = TUNING
        # By environment, so no absolute path enters the recorded overrides.
        os.environ["SLIMTRAIN_DATA_DIR"] = str(args.data_dir)
        overrides = [f"train.epochs={epochs}"]
    else:
        seeds = args.seeds or [0]
        epochs, levels = 10, [0.9, 0.99]
        tuning_grid = {method: (option, values[1:3]) for method, (option, values) in TUNING.items()}
        overrides = ["data.name=digits", "data.val_fraction=0.15", f"train.epochs={epochs}"]
        if model == "mlp":
            overrides.append("model.kwargs.widths=[256,256]")
    overrides.append(f"evaluation.levels={levels}")
    recipes = [folder / f"{model}-{method}.yaml" for method in METHODS]
    tuning: dict[str, object] = {
        "model": model,
        "epochs (every method, total)": epochs,
        "target used for tuning": max(levels),
    }
    recipes, tried = tune_recipes(recipes, tuning_grid, max(levels), overrides, out)
    tuning.update(tried)
    status = run_fidelity(
        name,
        argv,
        recipes,
        baseline=baseline,
        overrides=overrides,
        seeds=seeds,
        output=out / "compare",
        module="bench_swd_fidelity",
    )
    save_tuning(name, "full" if args.full else "quick", tuning)
    return status


if __name__ == "__main__":
    sys.exit(main())
