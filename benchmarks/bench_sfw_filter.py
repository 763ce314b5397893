"""Filter pruning after SFW with group k-support balls, against SGD and SGD + group lasso (LeNet-5).

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) train once in group k-support balls over conv filters and prune
any fraction of the filters afterwards without retraining. Recipes (``configs/fashion-mnist/``):
``lenet5-dense`` (SGD, the baseline), ``lenet5-sfw-group-ksupport`` and ``lenet5-group-lasso``, each tuned
like the unstructured benchmark (a 2 × 2 grid of step size and regularisation strength at the first seed,
chosen by validation accuracy after compression; :data:`benchmarks.bench_sfw_fidelity.GRIDS`). Every run is
compressed by uniform per-layer L1 filter pruning at fractions 0–0.9 (no retraining); test accuracies and
"leads" verdicts against SGD are recorded.

``--quick``: digits, 1 epoch, 2 seeds (seconds). ``--full``: Fashion-MNIST, 6 epochs (the recipes say 20), 3
seeds.
"""

from __future__ import annotations

from benchmarks.bench_sfw_fidelity import run_structured


def main(argv: list[str] | None = None) -> int:
    """Train, prune and record (see the module docstring); returns 0 on success."""
    return run_structured("sfw_filter", "filter", ("dense", "sfw-group-ksupport", "group-lasso"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
