"""Measured inference latency and measured speedup (docs/metrics.md#latency).

Procedure: ``model.eval()`` under ``torch.inference_mode()``; ``warmup`` untimed iterations; then at least
``iters`` timed iterations and at least ``min_time_s`` seconds; the median and the interquartile range are
reported. On CUDA the device is synchronised before each clock reading.

A measured speed-up is reported with its interquartile range (over the ratios of every pair of timed rounds,
dense / compressed), and a latency or speed-up whose IQR exceeds :data:`NOISY_RELATIVE_IQR` of its median is
flagged as noisy (docs/metrics.md).
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
from torch import nn

import slimtrain
from slimtrain._materialized import refuse_unmaterialized
from slimtrain._model_io import batch_size, call_model, eval_mode, input_tensors, map_tensors
from slimtrain.metrics.macs import ExampleInput

NOISY_RELATIVE_IQR = 0.25
"""A latency or measured speed-up whose interquartile range exceeds this fraction of its median is noisy."""
_MAX_ROUNDS_PER_SIDE = 500
"""Per-round timings used for a speed-up's spread (evenly spaced order statistics beyond this)."""


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
        rounds_ms: Time of every timed iteration, in order (empty if not recorded).
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
    rounds_ms: tuple[float, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The fields that must agree for two results to be comparable."""
        keys = ("batch_size", "threads", "dtype", "device", "memory_format", "compiled")
        return {k: v for k, v in asdict(self).items() if k in keys}

    @property
    def noisy(self) -> bool:
        """Whether the IQR exceeds :data:`NOISY_RELATIVE_IQR` of the median."""
        return is_noisy(self.median_ms, self.iqr_ms)


@dataclass(frozen=True)
class SpeedupSpread:
    """A measured speed-up with its spread (docs/metrics.md).

    Attributes:
        median: ``measured_speedup``, the ratio of the two median latencies (dense / compressed).
        q1: 25th percentile of the per-round speed-ups (dense round / compressed round, every pair).
        q3: 75th percentile of the same.
    """

    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 − q1``."""
        return self.q3 - self.q1

    @property
    def noisy(self) -> bool:
        """Whether the IQR exceeds :data:`NOISY_RELATIVE_IQR` of the median."""
        return is_noisy(self.median, self.iqr)


def is_noisy(median: float, iqr: float) -> bool:
    """Whether a measurement's interquartile range exceeds :data:`NOISY_RELATIVE_IQR` of its median."""
    return median > 0 and iqr > NOISY_RELATIVE_IQR * median


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
    """Measure the forward latency of ``model`` on ``example_input`` (docs/metrics.md#latency).

    The model's training flag and torch's thread count are restored afterwards; with ``channels_last`` a
    converted copy of the model is timed, the original is left as is.

    Args:
        model: Model to time (measure the exported model for real speedups).
        example_input: Input batch on the model's device: a tensor, a tuple of positional inputs or a dict
            of keyword inputs.
        warmup: Untimed iterations first (spec: at least 10).
        iters: Minimum number of timed iterations (spec: at least 50).
        min_time_s: Keep timing until this many seconds have passed as well (spec: or at least 1 s).
        threads: ``torch.set_num_threads`` value during the measurement; ``None`` keeps the current one.
        channels_last: Time the model and 4-D inputs in ``torch.channels_last`` memory format.

    Returns:
        The :class:`LatencyResult`.

    Raises:
        UnsupportedModelError: A parameter or buffer without values (``meta`` device, lazy module).
    """
    refuse_unmaterialized(model, "measure_latency")
    if warmup < 0 or iters < 1 or min_time_s < 0:
        raise ValueError(
            f"need warmup >= 0, iters >= 1, min_time_s >= 0; got {warmup}, {iters}, {min_time_s}"
        )
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be positive, got {threads}")
    batch = batch_size(example_input)
    inputs = example_input
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        inputs = map_tensors(lambda x: x.to(memory_format=torch.channels_last) if x.dim() == 4 else x, inputs)
    first = input_tensors(inputs)[0]
    device = first.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                call_model(model, inputs)
            sync()
            start = time.perf_counter()
            while len(times) < iters or time.perf_counter() - start < min_time_s:
                t0 = time.perf_counter()
                call_model(model, inputs)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    median = statistics.median(times)
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
        dtype=str(_model_dtype(model, first.dtype)).removeprefix("torch."),
        device=str(device),
        device_name=_device_name(device),
        memory_format="channels_last" if channels_last else "contiguous",
        compiled=hasattr(model, "_orig_mod"),
        torch_version=torch.__version__,
        slimtrain_version=slimtrain.__version__,
        rounds_ms=tuple(times),
    )


def measured_speedup(
    dense: LatencyResult, compressed: LatencyResult, *, theoretical_speedup: float | None = None
) -> float:
    """measured_speedup = latency_dense / latency_compressed (medians, same settings; docs/metrics.md).

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


def measured_speedup_spread(
    dense: LatencyResult, compressed: LatencyResult, *, theoretical_speedup: float | None = None
) -> SpeedupSpread:
    """:func:`measured_speedup` with its interquartile range (docs/metrics.md).

    The quartiles are those of ``dense_i / compressed_j`` over every pair of timed rounds (the two models are
    timed one after the other, so rounds are not paired); a result without per-round timings contributes
    its median only.

    Raises:
        ValueError: If the two results were measured with different settings.
    """
    speedup = measured_speedup(dense, compressed, theoretical_speedup=theoretical_speedup)
    ratios = sorted(d / c for d in _rounds(dense) for c in _rounds(compressed) if c > 0)
    if len(ratios) < 2:
        return SpeedupSpread(speedup, speedup, speedup)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return SpeedupSpread(speedup, q1, q3)


def latency_result_fields(
    result: LatencyResult,
    dense: LatencyResult | None = None,
    *,
    theoretical_speedup: float | None = None,
) -> dict[str, float]:
    """The report fields of one latency measurement at batch size N, and of its speed-up over ``dense``.

    Returns:
        ``latency_ms_b{N}`` (median) and ``latency_iqr_ms_b{N}``; with ``dense`` also
        ``measured_speedup_b{N}`` (ratio of medians) and its quartiles ``measured_speedup_q1_b{N}``,
        ``measured_speedup_q3_b{N}`` (:func:`measured_speedup_spread`).
    """
    n = result.batch_size
    fields = {f"latency_ms_b{n}": result.median_ms, f"latency_iqr_ms_b{n}": result.iqr_ms}
    if dense is not None:
        spread = measured_speedup_spread(dense, result, theoretical_speedup=theoretical_speedup)
        fields[f"measured_speedup_b{n}"] = spread.median
        fields[f"measured_speedup_q1_b{n}"] = spread.q1
        fields[f"measured_speedup_q3_b{n}"] = spread.q3
    return fields


def describe_latency(fields: dict[str, Any], batch: int) -> str:
    """One line for the latency fields of batch size ``batch``, with their spreads and noise flags.

    Example: ``"0.052 ms median (IQR 0.004 ms); measured speed-up 1.12x (IQR 1.03-1.21x)"``; a value whose
    IQR exceeds :data:`NOISY_RELATIVE_IQR` of its median is followed by ``[noisy: IQR > 25% of median]``.
    Fields written before the spreads were recorded print without them.
    """
    flag = f" [noisy: IQR > {NOISY_RELATIVE_IQR:.0%} of median]"
    median = fields[f"latency_ms_b{batch}"]
    text = f"{median:.3f} ms median"
    iqr = fields.get(f"latency_iqr_ms_b{batch}")
    if iqr is not None:
        text += f" (IQR {iqr:.3f} ms)" + (flag if is_noisy(median, iqr) else "")
    speedup = fields.get(f"measured_speedup_b{batch}")
    if speedup is not None:
        text += f"; measured speed-up {speedup:.2f}x"
        q1, q3 = fields.get(f"measured_speedup_q1_b{batch}"), fields.get(f"measured_speedup_q3_b{batch}")
        if q1 is not None and q3 is not None:
            text += f" (IQR {q1:.2f}-{q3:.2f}x)" + (flag if is_noisy(speedup, q3 - q1) else "")
    return text


def latency_fields(
    model: nn.Module,
    example_inputs: Sequence[ExampleInput],
    *,
    reference: nn.Module | None = None,
    theoretical_speedup: float | None = None,
    **measure_kwargs: Any,
) -> dict[str, float]:
    """The latency fields of a sweep row for ``model`` at several batch sizes; speedups over ``reference``.

    Args:
        model: The (exported) compressed model.
        example_inputs: One input per batch size, e.g. batches of 1 and 128 samples.
        reference: The dense model, timed with the same settings, for ``measured_speedup_b{N}``.
        theoretical_speedup: Passed to :func:`measured_speedup` for its warning.
        **measure_kwargs: Settings for :func:`measure_latency` (``warmup``, ``iters``, ``threads`` ...).

    Returns:
        For every batch size N the fields of :func:`latency_result_fields`: ``latency_ms_b{N}`` (median),
        ``latency_iqr_ms_b{N}`` and, with ``reference``, ``measured_speedup_b{N}`` with its quartiles
        ``measured_speedup_q1_b{N}`` and ``measured_speedup_q3_b{N}``.
    """
    fields: dict[str, float] = {}
    for x in example_inputs:
        result = measure_latency(model, x, **measure_kwargs)
        dense = measure_latency(reference, x, **measure_kwargs) if reference is not None else None
        fields.update(latency_result_fields(result, dense, theoretical_speedup=theoretical_speedup))
    return fields


def _rounds(result: LatencyResult) -> list[float]:
    """The per-round timings of ``result`` (its median alone if none), at most ``_MAX_ROUNDS_PER_SIDE``."""
    rounds = sorted(result.rounds_ms) or [result.median_ms]
    if len(rounds) <= _MAX_ROUNDS_PER_SIDE:
        return rounds
    step = (len(rounds) - 1) / (_MAX_ROUNDS_PER_SIDE - 1)
    return [rounds[round(i * step)] for i in range(_MAX_ROUNDS_PER_SIDE)]


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
