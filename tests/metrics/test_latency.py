import math
import statistics

import pytest
import torch
from torch import nn

from slimtrain.metrics import (
    NOISY_RELATIVE_IQR,
    LatencyResult,
    describe_latency,
    is_noisy,
    latency_fields,
    latency_result_fields,
    measure_latency,
    measured_speedup,
    measured_speedup_spread,
)


class CountingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0
        self.saw_grad = False
        self.saw_training = False

    def forward(self, x):
        self.calls += 1
        self.saw_grad |= torch.is_grad_enabled()
        self.saw_training |= self.training
        return self.conv(x)


def test_latency_runs_warmup_and_records_settings():
    """Finite ordered statistics; warm-up + timed calls all run in eval/inference mode; settings recorded."""
    model = CountingModel()
    threads = torch.get_num_threads()
    r = measure_latency(model, torch.randn(4, 3, 8, 8), warmup=3, iters=7, threads=1, channels_last=False)
    assert model.calls == 3 + r.iterations and r.iterations >= 7 and r.warmup == 3
    assert not model.saw_grad and not model.saw_training and model.training
    assert all(math.isfinite(v) for v in (r.median_ms, r.iqr_ms, r.min_ms, r.max_ms, r.throughput))
    assert 0 <= r.min_ms <= r.median_ms <= r.max_ms and r.iqr_ms >= 0
    assert r.throughput == pytest.approx(4 / (r.median_ms / 1e3))
    assert (r.batch_size, r.threads, r.dtype, r.device, r.memory_format) == (
        4,
        1,
        "float32",
        "cpu",
        "contiguous",
    )
    assert r.torch_version == torch.__version__ and r.device_name and not r.compiled
    assert torch.get_num_threads() == threads  # restored


def test_min_time_extends_the_timing():
    """With min_time_s the timing continues past `iters` until that much time has passed."""
    r = measure_latency(nn.Linear(4, 4), torch.randn(2, 4), warmup=0, iters=1, min_time_s=0.05)
    assert r.iterations > 1 and r.median_ms * r.iterations >= 0.0


def test_channels_last_times_a_copy():
    """channels_last is recorded and leaves the caller's model in its memory format."""
    model = nn.Conv2d(3, 4, 3)
    r = measure_latency(model, torch.randn(1, 3, 8, 8), warmup=1, iters=2, channels_last=True)
    assert r.memory_format == "channels_last"
    assert model.weight.is_contiguous()


def _result(median, **changes):
    base = dict(
        median_ms=median, iqr_ms=0.0, min_ms=median, max_ms=median, throughput=1.0, batch_size=1,
        iterations=50, warmup=10, threads=1, dtype="float32", device="cpu", device_name="x",
        memory_format="contiguous", compiled=False, torch_version="t", slimtrain_version="s",
    )  # fmt: skip
    return LatencyResult(**(base | changes))


def test_measured_speedup_and_warning():
    """measured_speedup = dense/compressed medians; warns when theory promises > 1 but measurement ≤ 1."""
    assert measured_speedup(_result(4.0), _result(2.0), theoretical_speedup=3.0) == 2.0
    with pytest.warns(UserWarning, match="measured_speedup"):
        assert measured_speedup(_result(2.0), _result(2.5), theoretical_speedup=3.0) == pytest.approx(0.8)


def test_measured_speedup_rejects_different_settings():
    """Results with different batch sizes (or threads, dtype, ...) are not compared."""
    with pytest.raises(ValueError, match="batch_size"):
        measured_speedup(_result(1.0), _result(1.0, batch_size=128))


def test_latency_fields_names_per_batch_size():
    """latency_fields gives latency_ms_b{N} with its IQR for each batch and, with a reference,
    measured_speedup_b{N} with its quartiles.
    """
    model, reference = nn.Linear(8, 2), nn.Linear(8, 2)
    fields = latency_fields(
        model, [torch.randn(1, 8), torch.randn(16, 8)], reference=reference, warmup=1, iters=3
    )
    names = ("latency_ms", "latency_iqr_ms", "measured_speedup", "measured_speedup_q1", "measured_speedup_q3")
    assert set(fields) == {f"{name}_b{n}" for name in names for n in (1, 16)}
    assert all(math.isfinite(v) and v >= 0 for v in fields.values())
    for n in (1, 16):
        assert fields[f"latency_ms_b{n}"] > 0 and fields[f"measured_speedup_b{n}"] > 0
        assert fields[f"measured_speedup_q1_b{n}"] <= fields[f"measured_speedup_q3_b{n}"]


def test_latency_records_every_round():
    """The per-round timings behind the median and IQR are kept."""
    r = measure_latency(nn.Linear(4, 4), torch.randn(2, 4), warmup=0, iters=5)
    assert len(r.rounds_ms) == r.iterations and min(r.rounds_ms) == r.min_ms and max(r.rounds_ms) == r.max_ms


def test_speedup_spread_is_the_iqr_of_round_ratios():
    """The speed-up's quartiles are those of dense_i/compressed_j over all pairs of rounds; its median is
    the ratio of the medians; a wide spread is flagged as noisy.
    """
    steady = measured_speedup_spread(_result(4.0, rounds_ms=(4.0,) * 5), _result(2.0, rounds_ms=(2.0,) * 5))
    assert (steady.median, steady.q1, steady.q3, steady.noisy) == (2.0, 2.0, 2.0, False)
    dense = _result(4.0, rounds_ms=(2.0, 4.0, 4.0, 4.0, 40.0))
    spread = measured_speedup_spread(dense, _result(2.0, rounds_ms=(1.0, 2.0, 2.0, 2.0, 2.0)))
    ratios = sorted(d / c for d in dense.rounds_ms for c in (1.0, 2.0, 2.0, 2.0, 2.0))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    assert (spread.median, spread.q1, spread.q3) == (2.0, q1, q3)
    assert spread.noisy == (q3 - q1 > NOISY_RELATIVE_IQR * 2.0) and spread.noisy
    without_rounds = measured_speedup_spread(_result(3.0), _result(1.5))
    assert (without_rounds.q1, without_rounds.q3) == (2.0, 2.0)


def test_latency_lines_carry_the_iqr_and_the_noise_flag():
    """describe_latency prints the latency's IQR and the speed-up's quartiles, flags spreads wider than
    NOISY_RELATIVE_IQR of the median, and prints fields from before the spreads were recorded without them.
    """
    fields = latency_result_fields(
        _result(2.0, iqr_ms=0.1, rounds_ms=(1.9, 2.0, 2.1)), _result(4.0, rounds_ms=(4.0, 4.0, 4.0))
    )
    line = describe_latency(fields, 1)
    assert line.startswith("2.000 ms median (IQR 0.100 ms); measured speed-up 2.00x (IQR ")
    assert "noisy" not in line
    noisy = describe_latency({**fields, "latency_iqr_ms_b1": 1.0, "measured_speedup_q3_b1": 3.0}, 1)
    assert noisy.count(f"[noisy: IQR > {NOISY_RELATIVE_IQR:.0%} of median]") == 2
    assert is_noisy(2.0, 0.51) and not is_noisy(2.0, 0.5)
    old = describe_latency({"latency_ms_b1": 2.0, "measured_speedup_b1": 1.5}, 1)
    assert old == "2.000 ms median; measured speed-up 1.50x"
