import math

import pytest
import torch
from torch import nn

from slimtrain.metrics import LatencyResult, latency_fields, measure_latency, measured_speedup


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
    """latency_fields gives latency_ms_b{N} for each batch and measured_speedup_b{N} with a reference."""
    model, reference = nn.Linear(8, 2), nn.Linear(8, 2)
    fields = latency_fields(
        model, [torch.randn(1, 8), torch.randn(16, 8)], reference=reference, warmup=1, iters=3
    )
    assert set(fields) == {"latency_ms_b1", "latency_ms_b16", "measured_speedup_b1", "measured_speedup_b16"}
    assert all(math.isfinite(v) and v > 0 for v in fields.values())
