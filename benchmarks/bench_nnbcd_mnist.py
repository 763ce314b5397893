"""Fidelity benchmark of NN-BCD with TT compression in the paper's MNIST setting (docs/nnbcd.md#baselines).

Random 6,000-image training subset and 999-image test subset of MNIST (numpy seed 10; the reference
notebooks' exact sampling code is not known, so the subset differs from theirs), full batch, TT ranks
40/80/140/220 on the compressed layers, the compressed network evaluated without fine-tuning.

Architectures: ``mlp`` (784→1024→1024→10, both hidden layers TT-compressed, modes (4,4,4,4,4,4,4,7,7) and
(4,)^10) runs on a CPU; ``cnn`` (the paper's conv3×3/s2×32 → 5408→1024→1024→10, FC1 and FC2 compressed with
the paper's modes) needs a 5408-wide solve per iteration and belongs on a GPU.

``--experiment baselines`` (results ``nnbcd_mnist_baselines``) runs, on the same subsets and the same
bias-free 784→1024→1024→10 MLP: NN-BCD with 90% per-layer pruning of both hidden layers (output dense); the
MLP trained by SGD (lr 0.01, momentum 0.9, weight decay 5e-4, batch 64, the reference notebooks'
tensor-baseline settings) and then magnitude-pruned at 90% per hidden layer without fine-tuning, or
TT-SVD-compressed after training at every rank (post-hoc, no retraining); and the MLP trained by SGD with TT
hidden layers (cores as parameters, initialised by TT-SVD of the initial weights) at the same modes and ranks
as NN-BCD, i.e. at equal compression.

Data directory: ``--data-dir`` or ``SLIMTRAIN_DATA_DIR``: the folder of the MNIST IDX files (gzipped or not),
or the folder holding ``mnist/`` as the other benchmarks take it.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import BenchmarkRecorder
from slimtrain.algebra.tt import tt_svd_matrix
from slimtrain.bcd import NNBCD, Im2colConv, PrunedCopy, TensorTrainCopy, module_storage_fractions
from slimtrain.compress import apply_masks, layerwise_magnitude_masks
from slimtrain.layers import TTLinear
from slimtrain.models.mlp import MLP

MLP_MODES = {0: (4, 4, 4, 4, 4, 4, 4, 7, 7), 1: (4,) * 10}
CNN_MODES = {1: (26, 26, 4, 4, 4, 4, 4, 2, 2, 2), 2: (4,) * 10}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path:
    for folder in (data_dir, data_dir / "mnist"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).exists():
                return folder / name
    raise FileNotFoundError(f"MNIST file {stem}(.gz) not found in {data_dir} or {data_dir / 'mnist'}")


def load_subsets(data_dir: Path, n_train: int, n_test: int, seed: int):
    """Random training and test subsets as float tensors in [0, 1] of shape (N, 1, 28, 28)."""
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = read_idx(_find(data_dir, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find(data_dir, f"{split}-labels-idx1-ubyte"))
        idx = rng.choice(len(labels), size=n, replace=False)
        out.append(
            (
                torch.from_numpy(images[idx].astype(np.float64) / 255.0).unsqueeze(1),
                torch.from_numpy(labels[idx]),
            )
        )
    return out


def build_solver(arch: str, rank: int, args: argparse.Namespace, dtype: torch.dtype) -> NNBCD:
    """The NN-BCD solver for one architecture and TT rank."""
    common = dict(gamma=args.gamma, rho=args.rho, alpha=args.alpha, tau=args.tau, dtype=dtype, seed=args.seed)
    if arch == "mlp":
        copies = {i: TensorTrainCopy(m, rank) for i, m in MLP_MODES.items()}
        return NNBCD([784, 1024, 1024, 10], compression=copies, init_scale=0.2, **common)
    conv = Im2colConv(1, 32, (28, 28))
    copies = {i: TensorTrainCopy(m, rank) for i, m in CNN_MODES.items()}
    return NNBCD(
        [conv.out_features, 1024, 1024, 10],
        conv=conv,
        compression=copies,
        init="normal",
        init_scale=0.01,
        **common,
    )


def train_sgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """Mini-batch SGD with cross-entropy (lr 0.01, momentum 0.9, weight decay 5e-4, batch 64)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()


def with_tt_hidden_layers(model: MLP, rank: int) -> MLP:
    """A copy of the MLP whose hidden layers are TT layers: TT-SVD of their weights at ``rank``."""
    model = copy.deepcopy(model)
    for index, modes in MLP_MODES.items():
        layer = model.hidden[index]
        cores = tt_svd_matrix(layer.weight.detach(), modes, rank).cores
        model.hidden[index] = TTLinear(cores, layer.in_features, layer.out_features)
    return model


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy."""
    return float((model(x).argmax(1) == y).float().mean())


def run_baselines(rec: BenchmarkRecorder, args: argparse.Namespace, data, iterations: int, ranks) -> None:
    """NN-BCD 90% pruning, SGD + 90% per-layer magnitude pruning, SGD with TT layers at each rank."""
    (x, y), (xt, yt) = data
    x, xt = x.float(), xt.float()
    rec.note("sgd_epochs", args.sgd_epochs)
    solver = NNBCD(
        [784, 1024, 1024, 10],
        gamma=args.gamma, rho=args.rho, alpha=args.alpha, tau=args.tau, dtype=torch.float32, seed=args.seed,
        compression={0: PrunedCopy(0.9), 1: PrunedCopy(0.9)},
    )  # fmt: skip
    start = time.perf_counter()
    history = solver.fit(x, y, iterations, test=(xt, yt), eval_every=args.eval_every)
    rec.add("nnbcd_prune90_test_accuracy", history[-1].test_accuracy, unit="fraction")
    rec.note("nnbcd_prune90", {
        "iterations": iterations,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "objective_rises": sum(bool(r.increased_terms) for r in history),
        "curve_iteration_train_test": [
            (r.iteration, r.train_accuracy, r.test_accuracy) for r in history if r.test_accuracy is not None
        ],
    })  # fmt: skip
    print(f"nnbcd prune 90%: test={history[-1].test_accuracy:.4f}", flush=True)
    rec.save()

    torch.manual_seed(args.seed)
    dense = MLP(784, 10, widths=(1024, 1024), bias=False)
    train_sgd(dense, x, y, args.sgd_epochs, args.seed)
    masks = layerwise_magnitude_masks(dense, 0.9)
    del masks["classifier.weight"]  # the output layer stays dense, as in NN-BCD
    pruned = apply_masks(dense, masks)
    rec.add("sgd_dense_test_accuracy", accuracy(dense, xt, yt), unit="fraction")
    rec.add("sgd_prune90_per_layer_no_ft_test_accuracy", accuracy(pruned, xt, yt), unit="fraction")
    print(f"sgd dense={accuracy(dense, xt, yt):.4f} pruned90={accuracy(pruned, xt, yt):.4f}", flush=True)
    for rank in ranks:
        posthoc = with_tt_hidden_layers(dense, rank)
        rec.add(f"sgd_posthoc_tt_svd_test_accuracy_rank{rank}", accuracy(posthoc, xt, yt), unit="fraction")
        print(f"sgd + post-hoc TT-SVD rank {rank}: test={accuracy(posthoc, xt, yt):.4f}", flush=True)
    rec.save()

    for rank in ranks:
        torch.manual_seed(args.seed)
        model = with_tt_hidden_layers(MLP(784, 10, widths=(1024, 1024), bias=False), rank)
        start = time.perf_counter()
        train_sgd(model, x, y, args.sgd_epochs, args.seed)
        fractions = module_storage_fractions(model)
        rec.add(f"tt_sgd_test_accuracy_rank{rank}", accuracy(model, xt, yt), unit="fraction")
        rec.note(f"tt_sgd_rank{rank}", {
            "storage_fraction_compressed": round(fractions.compressed, 4),
            "storage_fraction_all": round(fractions.all, 4),
            "wall_seconds": round(time.perf_counter() - start, 1),
        })  # fmt: skip
        print(f"tt-sgd rank {rank}: test={accuracy(model, xt, yt):.4f}", flush=True)
        rec.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_nnbcd_mnist", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="500 training images, 3 iterations, rank 40")
    mode.add_argument("--full", action="store_true", help="6,000/999 images, ranks 40/220/80/140")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("SLIMTRAIN_DATA_DIR"))
    parser.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--iterations", type=int, default=None, help="sweeps per rank (full default 40)")
    parser.add_argument("--ranks", type=int, nargs="+", default=None)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--gamma", type=float, default=None, help="default: mlp 0.5, cnn 5")
    parser.add_argument("--rho", type=float, default=None, help="default: mlp 0.5, cnn 5")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--tau", type=float, default=None, help="default: mlp 5, cnn 0.1")
    parser.add_argument("--float64", action="store_true", help="float64 instead of float32")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--experiment", choices=("tt", "baselines"), default="tt")
    parser.add_argument("--sgd-epochs", type=int, default=10, help="baselines: SGD epochs")
    parser.add_argument("--suffix", default="", help="appended to the results name (keeps earlier runs)")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        if not args.full:
            # `python -m benchmarks --quick` runs every benchmark; MNIST is optional data.
            print("bench_nnbcd_mnist skipped: give --data-dir or set SLIMTRAIN_DATA_DIR", flush=True)
            return 0
        parser.error("give --data-dir or set SLIMTRAIN_DATA_DIR to the MNIST IDX directory")
    # Reference settings: the MLP notebooks (γ = ρ = 0.5, τ = 5) and the CNN notebook (γ = ρ = 5, τ = 0.1).
    for key, mlp_value, cnn_value in (("gamma", 0.5, 5.0), ("rho", 0.5, 5.0), ("tau", 5.0, 0.1)):
        if getattr(args, key) is None:
            setattr(args, key, mlp_value if args.arch == "mlp" else cnn_value)
    quick = not args.full
    n_train, n_test = (500, 999) if quick else (6000, 999)
    iterations = args.iterations or (3 if quick else 40)
    ranks = args.ranks or ([40] if quick else [40, 220, 80, 140])  # the ranks with reference outputs first
    dtype = torch.float64 if args.float64 else torch.float32
    (x, y), (xt, yt) = load_subsets(args.data_dir, n_train, n_test, args.seed)
    if args.arch == "mlp":
        x, xt = x.reshape(n_train, -1), xt.reshape(n_test, -1)

    torch.set_num_threads(1)
    if args.experiment == "baselines":
        if args.arch != "mlp":
            parser.error("--experiment baselines runs the MLP only")
        rec = BenchmarkRecorder(f"nnbcd_mnist_baselines{args.suffix}", argv, module="bench_nnbcd_mnist")
        rec.note("setting", f"MNIST random subsets {n_train} train / {n_test} test (numpy seed {args.seed})")
        rec.note("hyperparameters", dict(gamma=args.gamma, rho=args.rho, alpha=args.alpha, tau=args.tau))
        run_baselines(rec, args, ((x, y), (xt, yt)), iterations, ranks)
        return 0
    rec = BenchmarkRecorder(f"nnbcd_mnist{args.suffix}", argv, module="bench_nnbcd_mnist")
    rec.note(
        "setting",
        f"MNIST random subsets {n_train} train / {n_test} test (numpy seed {args.seed}), {args.arch}",
    )
    rec.note("hyperparameters", dict(gamma=args.gamma, rho=args.rho, alpha=args.alpha, tau=args.tau))
    rec.note("dtype", str(dtype))
    rec.note("iterations_per_rank", iterations)
    rec.note("torch_threads", torch.get_num_threads())
    for rank in ranks:
        solver = build_solver(args.arch, rank, args, dtype)
        start = time.perf_counter()
        history = solver.fit(x, y, iterations, test=(xt, yt), eval_every=args.eval_every)
        wall = time.perf_counter() - start
        fractions = module_storage_fractions(solver.to_module())
        final = history[-1]
        curve = [
            (r.iteration, r.train_accuracy, r.test_accuracy, r.objective.total)
            for r in history
            if r.test_accuracy is not None
        ]
        rec.add(f"test_accuracy_rank{rank}", final.test_accuracy, unit="fraction")
        rec.add(f"train_accuracy_rank{rank}", final.train_accuracy, unit="fraction")
        rec.add(f"seconds_per_iteration_rank{rank}", [r.seconds for r in history], unit="s")
        rec.note(f"rank{rank}", {
            "storage_fraction_compressed": round(fractions.compressed, 4),
            "storage_fraction_all": round(fractions.all, 4),
            "wall_seconds": round(wall, 1),
            "objective_rises": sum(bool(r.increased_terms) for r in history),
            "tt_updates_rejected_by_safeguard": {i: c.rejected_updates for i, c in solver.copies.items()},
            "curve_iteration_train_test_objective": curve,
        })  # fmt: skip
        print(
            f"rank {rank}: CR2={fractions.compressed:.4f} CR1={fractions.all:.4f} "
            f"train={final.train_accuracy:.4f} test={final.test_accuracy:.4f} "
            f"after {iterations} iterations ({wall:.0f} s)",
            flush=True,
        )
        rec.save()  # after every rank, so that an interrupted long run keeps what it finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
