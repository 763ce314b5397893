"""BatchLoader versus torch's DataLoader over MNIST-sized in-memory data.

Times one epoch (shuffled, batch 128) of:

- ``batch_loader``: :class:`slimtrain.data.BatchLoader` (one tensor index per batch);
- ``batch_loader_augmented``: the same with the standard MNIST-like augmentation (crop pad 2 + flip);
- ``dataloader_tensordataset``: ``DataLoader(TensorDataset, batch_size=128, shuffle=True)``, the standard
  recipe (per-sample indexing and collation);
- ``dataloader_batch_sampler``: ``DataLoader`` driven by a ``BatchSampler`` with ``batch_size=None``, so the
  dataset is indexed once per batch as well.

Each batch is touched (moved to the device) so lazy work is counted. ``--quick`` uses 10,000 samples and
3 rounds; ``--full`` 60,000 samples (MNIST's training set) and 5 rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from benchmarks.harness import BenchmarkRecorder
from slimtrain.data import BatchLoader, load_dataset, standard_augmentation

BATCH_SIZE = 128


def _epoch_ms(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    start = time.perf_counter()
    count = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        count += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    assert count > 0
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data_loader", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10,000 samples, 3 rounds (default)")
    mode.add_argument("--full", action="store_true", help="60,000 samples, 5 rounds")
    parser.add_argument("--device", default="cpu", help="where batches end up (BatchLoader data lives there)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n, rounds = (60_000, 5) if args.full else (10_000, 3)
    device = torch.device(args.device)

    splits = load_dataset("synthetic", num_samples=n, num_test=1, input_shape=(1, 28, 28), val_fraction=0.0)
    train = splits.train
    on_device = train.to(device)
    augment = standard_augmentation(2, True, splits.mean, splits.std)
    tensors = TensorDataset(train.inputs, train.targets)
    pin = device.type == "cuda"

    def loaders(epoch: int) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]:
        plain = BatchLoader(on_device, BATCH_SIZE, shuffle=True, seed=0)
        augmented = BatchLoader(on_device, BATCH_SIZE, shuffle=True, seed=0, transform=augment)
        plain.set_epoch(epoch)
        augmented.set_epoch(epoch)
        sampler = BatchSampler(RandomSampler(tensors), BATCH_SIZE, drop_last=False)
        return {
            "batch_loader": plain,
            "batch_loader_augmented": augmented,
            "dataloader_tensordataset": DataLoader(tensors, BATCH_SIZE, shuffle=True, pin_memory=pin),
            "dataloader_batch_sampler": DataLoader(tensors, sampler=sampler, batch_size=None, pin_memory=pin),
        }

    times: dict[str, list[float]] = {name: [] for name in loaders(0)}
    for epoch in range(rounds + 1):  # epoch 0 warms up caches and allocators and is not recorded
        for name, loader in loaders(epoch).items():
            ms = _epoch_ms(loader, device)
            if epoch > 0:
                times[name].append(ms)

    rec = BenchmarkRecorder("data_loader", argv)
    for name, values in times.items():
        rec.add(f"{name}_epoch", values, unit="ms")
    median = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    rec.note("samples", n)
    rec.note("batch_size", BATCH_SIZE)
    rec.note("input_shape", [1, 28, 28])
    rec.note("device", str(device))
    rec.note(
        "speedup_batch_loader_vs_dataloader_tensordataset",
        round(median["dataloader_tensordataset"] / median["batch_loader"], 2),
    )
    rec.note(
        "speedup_batch_loader_vs_dataloader_batch_sampler",
        round(median["dataloader_batch_sampler"] / median["batch_loader"], 2),
    )
    path = rec.save()
    for name, ms in median.items():
        print(f"{name:28s} {ms:9.1f} ms/epoch")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
