"""Low-rank compression after SFW with spectral k-support balls, against SGD, nuclear norm and Prox-SGD.

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) train once in spectral k-support balls over ``mat(W)`` of every
conv and truncate any fraction of the rank afterwards without retraining; they compare with a nuclear-norm
penalty and proximal SGD, whose SVD per layer and step they contrast with SFW's cost (the recorded training
seconds). Recipes (``configs/fashion-mnist/``): ``lenet5-dense`` (SGD, the baseline),
``lenet5-sfw-spectral-ksupport``, ``lenet5-nuclear-norm`` and ``lenet5-prox-svd``, at their recipe
hyperparameters (not tuned). Every run is compressed by per-layer SVD truncation of the convs (k×k conv +
1×1 conv) at rank fractions removed 0–0.9 (no retraining).

``--quick``: digits, 1 epoch, 2 seeds (seconds). ``--full``: Fashion-MNIST, 6 epochs (the recipes say 20),
3 seeds.
"""

from __future__ import annotations

from benchmarks.bench_sfw_fidelity import run_structured


def main(argv: list[str] | None = None) -> int:
    """Train, compress and record (see the module docstring); returns 0 on success."""
    recipes = ["lenet5-dense", "lenet5-sfw-spectral-ksupport", "lenet5-nuclear-norm", "lenet5-prox-svd"]
    return run_structured("sfw_lowrank", "lowrank", recipes, argv)


if __name__ == "__main__":
    raise SystemExit(main())
