"""The SFW fidelity benchmark of :mod:`benchmarks.bench_sfw_fidelity` on LeNet-5 instead of the MLP.

Same recipes (``configs/fashion-mnist/lenet5-*.yaml``), tuning grids, seeds and protocol; ``--full`` trains
6 epochs on Fashion-MNIST (the recipes say 20), ``--quick`` 1 epoch on digits.
"""

from __future__ import annotations

from benchmarks.bench_sfw_fidelity import run


def main(argv: list[str] | None = None) -> int:
    """Tune, train, prune and record the LeNet-5 recipes; returns 0 on success."""
    return run("sfw_fidelity_lenet5", "lenet5", argv)


if __name__ == "__main__":
    raise SystemExit(main())
