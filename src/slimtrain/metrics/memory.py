"""Measured peak memory of one training step or one inference pass (docs/metrics.md#latency).

The step runs in a fresh process started with ``spawn``, so the measurement neither disturbs nor is
disturbed by the caller's memory, and the caller's model is left untouched (the child trains a copy):

- CPU: the child's resident-set high-water mark after the step, and its resident set just before it
  (interpreter, torch, model and input loaded). On Linux the mark is reset before the step (``5`` written
  to ``/proc/self/clear_refs``) and read from ``VmHWM`` in ``/proc/self/status``, so import-time peaks do
  not mask the step; elsewhere ``resource.getrusage(...).ru_maxrss`` is used, which includes them;
- CUDA: ``torch.cuda.max_memory_allocated`` after the step, and ``torch.cuda.memory_allocated`` before it.

The model and inputs are sent with ``torch.save``; their classes (and ``loss_fn``/``optimizer_factory``)
must be importable by the child, i.e. defined at module level.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import resource
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._model_io import batch_size, call_model, flatten_tensors
from slimtrain.metrics.macs import ExampleInput

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[object], Tensor]


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of one step.

    Attributes:
        mode: ``"train"`` (forward, backward, optimizer step) or ``"eval"`` (inference-mode forward).
        device: Device the step ran on.
        peak_bytes: High-water mark after the step (CPU: process RSS; CUDA: allocated tensor memory).
        baseline_bytes: The same measure just before the step, with model and input loaded.
    """

    mode: Literal["train", "eval"]
    device: str
    peak_bytes: int
    baseline_bytes: int

    @property
    def step_bytes(self) -> int:
        """Memory the step added on top of the loaded model and input (``peak − baseline``)."""
        return self.peak_bytes - self.baseline_bytes


def sum_of_outputs(output: object) -> Tensor:
    """Default loss: the sum of every output tensor (same memory pattern as a real loss)."""
    return sum((tensor.float().sum() for _, tensor in flatten_tensors(output)), torch.zeros(()))


def measure_peak_memory(
    model: nn.Module,
    example_input: ExampleInput,
    *,
    mode: Literal["train", "eval"] = "train",
    device: str | torch.device = "cpu",
    loss_fn: LossFn = sum_of_outputs,
    optimizer_factory: OptimizerFactory | None = None,
) -> PeakMemory:
    """Measure the peak memory of one training step (or inference pass) in a spawned child process.

    Args:
        model: Model to measure; it is copied to the child, never modified.
        example_input: Input batch: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        mode: ``"train"``: forward, ``loss_fn(output).backward()``, one optimizer step; ``"eval"``: one
            forward pass in eval mode under ``torch.inference_mode()``.
        device: Device the child runs the step on (``"cpu"`` or ``"cuda"``/``"cuda:N"``).
        loss_fn: Maps the model output to a scalar loss (module-level function).
        optimizer_factory: Builds the optimizer from the parameters (module-level callable); default SGD
            with momentum 0.9, lr 0.01.

    Returns:
        The :class:`PeakMemory` (``peak_memory_bytes_train`` / ``peak_memory_bytes_eval`` of
        docs/metrics.md#summarize is its ``peak_bytes``).

    Raises:
        UnsupportedModelError: A parameter or buffer without values (``meta`` device, lazy module).
    """
    refuse_unmaterialized(model, "measure_peak_memory")
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"peak memory is measured on cpu or cuda, got {device}")
    buffer = io.BytesIO()
    batch_size(example_input)  # refuses inputs without a batch dimension here, not in the child
    torch.save((model, example_input), buffer)
    factory = optimizer_factory or functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        peak, baseline = pool.submit(
            _child_step, buffer.getvalue(), mode, str(device), loss_fn, factory, torch.get_num_threads()
        ).result()
    return PeakMemory(mode=mode, device=str(device), peak_bytes=peak, baseline_bytes=baseline)


def _child_step(
    payload: bytes, mode: str, device: str, loss_fn: LossFn, factory: OptimizerFactory, threads: int
) -> tuple[int, int]:
    """Run one step in the child process; return (peak, baseline) bytes."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    # The payload was written by the parent process a moment ago, so full unpickling is safe here.
    model, inputs = torch.load(io.BytesIO(payload), map_location=dev, weights_only=False)
    del payload
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        baseline = torch.cuda.memory_allocated(dev)
    else:
        baseline = _reset_peak_rss()
    if mode == "train":
        model.train()
        optimizer = factory(model.parameters())
        optimizer.zero_grad()
        loss_fn(call_model(model, inputs)).backward()
        optimizer.step()
    else:
        model.eval()
        with torch.inference_mode():
            call_model(model, inputs)
    if cuda:
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev), baseline
    return _peak_rss(), baseline


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int:
    """Reset the resident-set high-water mark where the OS allows it; return the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return _peak_rss()  # no reset possible: the baseline is the high-water mark so far
    current = _status_bytes("VmRSS")
    return current if current is not None else _peak_rss()


def _peak_rss() -> int:
    """The resident-set high-water mark in bytes (``VmHWM``, else ``ru_maxrss``)."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
