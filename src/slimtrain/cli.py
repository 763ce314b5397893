"""The ``slimtrain`` command line."""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def _demo(args: argparse.Namespace) -> int:
    """Train an MLP on the embedded digits and print accuracy after global magnitude pruning."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(30):
        for idx in train[torch.randperm(len(train))].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    print(f"trained in {time.perf_counter() - start:.1f}s")
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    dense = [w.detach().clone() for w in weights]
    print("sparsity  test_acc")
    for sparsity in (0.0, 0.5, 0.8, 0.9, 0.95, 0.98):
        k = int(sparsity * magnitudes.numel())
        threshold = magnitudes.kthvalue(k).values if k > 0 else torch.tensor(-1.0)
        with torch.no_grad():
            for w, d in zip(weights, dense):
                w.copy_(d * (d.abs() > threshold))
            acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
        print(f"{sparsity:8.2f}  {acc:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slimtrain`` command."""
    parser = argparse.ArgumentParser(prog="slimtrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train and prune on the embedded digits data").set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)
