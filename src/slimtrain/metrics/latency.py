"""Measured inference latency and measured speedup (metrics.md §6).

Procedure: ``model.eval()`` under ``torch.inference_mode()``; ``warmup`` untimed iterations; then at least
``iters`` timed iterations and at least ``min_time_s`` seconds; the median and the interquartile range are
reported. On CUDA the device is synchronised before each clock reading.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

import slimtrain
from slimtrain.metrics.macs import ExampleInput, as_inputs


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one model at one setting, with the settings that produced it.

    Attributes:
        median_ms: Median time of one forward pass of the whole batch.
        iqr_ms: Interquartile range (75th − 25th percentile).
        min_ms: Fastest iteration.
        max_ms: Slowest iteration.
        throughput: Samples per second at the median (``batch_size / median``).
        batch_size: First dimension of the input.
        iterations: Timed iterations.
        warmup: Untimed warm-up iterations run before timing.
        threads: ``torch.get_num_threads()`` during the measurement.
        dtype: Floating dtype of the model's parameters (else of the input).
        device: ``"cpu"`` or ``"cuda:0"`` etc.
        device_name: CPU model or GPU name.
        memory_format: ``"channels_last"`` or ``"contiguous"``.
        compiled: Whether the model is a ``torch.compile`` module.
        torch_version: PyTorch version.
        slimtrain_version: slimtrain version.
    """

    median_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    throughput: float
    batch_size: int
    iterations: int
    warmup: int
    threads: int
    dtype: str
    device: str
    device_name: str
    memory_format: str
    compiled: bool
    torch_version: str
    slimtrain_version: str

    def settings(self) -> dict[str, Any]:
        """The fields that must agree for two results to be comparable."""
        keys = ("batch_size", "threads", "dtype", "device", "memory_format", "compiled")
        return {k: v for k, v in asdict(self).items() if k in keys}


def measure_latency(
    model: nn.Module,
    example_input: ExampleInput,
    *,
    warmup: int = 10,
    iters: int = 50,
    min_time_s: float = 0.0,
    threads: int | None = None,
    channels_last: bool = False,
) -> LatencyResult:
    """Measure the forward latency of ``model`` on ``example_input`` (metrics.md §6).

    The model's training flag and torch's thread count are restored afterwards; with ``channels_last`` a
    converted copy of the model is timed, the original is left as is.

    Args:
        model: Model to time (measure the exported model for real speedups).
        example_input: Input batch (or tuple of inputs) on the model's device.
        warmup: Untimed iterations first (spec: at least 10).
        iters: Minimum number of timed iterations (spec: at least 50).
        min_time_s: Keep timing until this many seconds have passed as well (spec: or at least 1 s).
        threads: ``torch.set_num_threads`` value during the measurement; ``None`` keeps the current one.
        channels_last: Time the model and 4-D inputs in ``torch.channels_last`` memory format.

    Returns:
        The :class:`LatencyResult`.
    """
    if warmup < 0 or iters < 1 or min_time_s < 0:
        raise ValueError(
            f"need warmup >= 0, iters >= 1, min_time_s >= 0; got {warmup}, {iters}, {min_time_s}"
        )
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be positive, got {threads}")
    inputs = as_inputs(example_input)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        inputs = tuple(x.to(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
    device = inputs[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    was_training = model.training
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(*inputs)
            sync()
            start = time.perf_counter()
            while len(times) < iters or time.perf_counter() - start < min_time_s:
                t0 = time.perf_counter()
                model(*inputs)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    median = statistics.median(times)
    batch = inputs[0].shape[0]
    return LatencyResult(
        median_ms=median,
        iqr_ms=q3 - q1,
        min_ms=min(times),
        max_ms=max(times),
        throughput=batch / (median / 1e3) if median > 0 else float("inf"),
        batch_size=batch,
        iterations=len(times),
        warmup=warmup,
        threads=used_threads,
        dtype=str(_model_dtype(model, inputs[0].dtype)).removeprefix("torch."),
        device=str(device),
        device_name=_device_name(device),
        memory_format="channels_last" if channels_last else "contiguous",
        compiled=hasattr(model, "_orig_mod"),
        torch_version=torch.__version__,
        slimtrain_version=slimtrain.__version__,
    )


def measured_speedup(
    dense: LatencyResult, compressed: LatencyResult, *, theoretical_speedup: float | None = None
) -> float:
    """measured_speedup = latency_dense / latency_compressed (medians, same settings; metrics.md §6).

    Warns (``UserWarning``) when ``theoretical_speedup`` > 1 but the measured speedup is ≤ 1, as is typical
    of unstructured sparsity on dense kernels and of factorizations at high rank.

    Raises:
        ValueError: If the two results were measured with different settings (batch, threads, dtype,
            device, memory format, compilation).
    """
    if dense.settings() != compressed.settings():
        raise ValueError(
            f"latencies measured with different settings: dense {dense.settings()} vs "
            f"compressed {compressed.settings()}"
        )
    speedup = dense.median_ms / compressed.median_ms
    if theoretical_speedup is not None and theoretical_speedup > 1 and speedup <= 1:
        warnings.warn(
            f"theoretical_speedup {theoretical_speedup:.2f} > 1 but measured_speedup {speedup:.2f} <= 1",
            stacklevel=2,
        )
    return speedup


def latency_fields(
    model: nn.Module,
    example_inputs: Sequence[Tensor],
    *,
    reference: nn.Module | None = None,
    theoretical_speedup: float | None = None,
    **measure_kwargs: Any,
) -> dict[str, float]:
    """The §7 latency fields of ``model`` at several batch sizes, and speedups over ``reference``.

    Args:
        model: The (exported) compressed model.
        example_inputs: One input per batch size, e.g. batches of 1 and 128 samples.
        reference: The dense model, timed with the same settings, for ``measured_speedup_b{N}``.
        theoretical_speedup: Passed to :func:`measured_speedup` for its warning.
        **measure_kwargs: Settings for :func:`measure_latency` (``warmup``, ``iters``, ``threads`` ...).

    Returns:
        ``latency_ms_b{N}`` (median) for every batch size N and, with ``reference``,
        ``measured_speedup_b{N}``.
    """
    fields: dict[str, float] = {}
    for x in example_inputs:
        result = measure_latency(model, x, **measure_kwargs)
        n = result.batch_size
        fields[f"latency_ms_b{n}"] = result.median_ms
        if reference is not None:
            dense = measure_latency(reference, x, **measure_kwargs)
            fields[f"measured_speedup_b{n}"] = measured_speedup(
                dense, result, theoretical_speedup=theoretical_speedup
            )
    return fields


def _model_dtype(model: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """Dtype of the first floating parameter of ``model``, else ``fallback``."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), fallback)


def _device_name(device: torch.device) -> str:
    """GPU name for CUDA devices; CPU model name (from ``/proc/cpuinfo`` when available) otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
