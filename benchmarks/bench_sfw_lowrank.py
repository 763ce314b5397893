"""Low-rank compression after SFW with spectral k-support balls, against SGD, nuclear norm and Prox-SGD.

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) train once in spectral k-support balls over ``mat(W)`` of every
conv and truncate any fraction of the rank afterwards without retraining; they compare with a nuclear-norm
penalty and proximal SGD, whose SVD per layer and step they contrast with SFW's cost (the recorded training
seconds). Recipes (``configs/fashion-mnist/``): ``lenet5-dense`` (SGD, the baseline),
``lenet5-sfw-spectral-ksupport``, ``lenet5-nuclear-norm`` and ``lenet5-prox-svd``, each tuned like the
unstructured benchmark (a 2 × 2 grid of step size and regularisation strength at the first seed, chosen by
validation accuracy after compression; :data:`benchmarks.bench_sfw_fidelity.GRIDS`). Every run is compressed
by per-layer SVD truncation of the convs (k×k conv + 1×1 conv) at rank fractions removed 0–0.9 (no
retraining).

``--quick``: digits, 1 epoch, 2 seeds (seconds). ``--full``: Fashion-MNIST, 6 epochs (the recipes say 20), 3
seeds.
"""

from __future__ import annotations

from benchmarks.bench_sfw_fidelity import run_structured


def main(argv: list[str] | None = None) -> int:
    """Train, compress and record (see the module docstring); returns 0 on success."""
    methods = ("dense", "sfw-spectral-ksupport", "nuclear-norm", "prox-svd")
    return run_structured("sfw_lowrank", "lowrank", methods, argv)


if __name__ == "__main__":
    raise SystemExit(main())
