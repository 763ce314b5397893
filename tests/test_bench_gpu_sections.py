"""The speed benchmarks' GPU sections: skipped with a note without CUDA, and runnable on any device.

The measuring functions are device-generic; here they run on the CPU with tiny settings, which checks that
they build, time and record their quantities and ratios (the numbers themselves mean nothing here).
"""

import pytest
import torch
from benchmarks import (
    bench_export_latency,
    bench_sfw_step,
    bench_structured_selection,
    bench_swd_overhead,
    bench_tdlrt_speed,
)
from benchmarks.harness import BenchmarkRecorder, gpu_section, interleaved_time_ms

CPU = torch.device("cpu")


def test_gpu_section_is_skipped_with_a_note_without_cuda(monkeypatch):
    """Without CUDA the measurement is not called and the note says the section was skipped."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rec = BenchmarkRecorder("toy", ["--quick"])
    gpu_section(rec, lambda device: pytest.fail("measured without a GPU"))
    assert rec.notes["gpu_section"].startswith("skipped: ")
    assert "gpu_section" in rec.to_markdown()


def test_gpu_section_records_the_device_name(monkeypatch):
    """With CUDA the measurement gets the first CUDA device and the note names it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU 80GB")
    rec, seen = BenchmarkRecorder("toy", ["--quick"]), []
    gpu_section(rec, seen.append)
    assert seen == [torch.device("cuda", 0)]
    assert rec.notes["gpu_section"]["device"] == "Some GPU 80GB"


def test_interleaved_time_ms_times_every_call_each_round():
    """One value per round and function; every function is called warmup + rounds × steps times."""
    calls = {"a": [], "b": []}
    times = interleaved_time_ms(
        {k: (lambda k=k: calls[k].append(1)) for k in calls}, CPU, rounds=3, steps=2, warmup=1
    )
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    assert {k: len(v) for k, v in calls.items()} == {"a": 7, "b": 7}


def _gpu_quantities(rec: BenchmarkRecorder) -> set[str]:
    assert all(r["median"] >= 0 for r in rec.summary.values())
    return {q for q in rec.summary if q.startswith("gpu ")}


def test_sfw_step_gpu_section_runs_on_a_cpu():
    """Every optimizer's step and both training steps are recorded, with their ratios to SGD."""
    rec = BenchmarkRecorder("sfw_step", ["--quick"])
    bench_sfw_step.measure_gpu(rec, CPU, rounds=1, steps=1, batch=2)
    names = {"sgd", *(f"sfw_{n}" for n in bench_sfw_step.SFW_CONFIGS)}
    expected = {f"gpu step_ms_{n}" for n in names} | {
        "gpu train_step_ms_sgd",
        "gpu train_step_ms_sfw_k_support",
    }
    assert _gpu_quantities(rec) == expected
    assert set(rec.notes["gpu_median_ratio_to_sgd"]) == {"sgd", *bench_sfw_step.SFW_CONFIGS}
    assert rec.notes["gpu_train_step_ratio_sfw_k_support_to_sgd"] > 0


def test_tdlrt_speed_gpu_section_runs_on_a_cpu():
    """Step times of dense and every TDLRT variant, their ratios and the inference speedup are recorded."""
    rec = BenchmarkRecorder("tdlrt_speed", ["--quick"])
    bench_tdlrt_speed.measure_gpu(rec, CPU, (8,), batch=2, rounds=1, fraction=0.5)
    quantities = _gpu_quantities(rec)
    for variant in ("two_pass", "parallel", "local"):
        assert f"gpu w8 step_ratio tdlrt_{variant}/dense" in quantities
    assert "gpu w8 inference_speedup factorized" in quantities


def test_swd_overhead_gpu_section_runs_on_a_cpu():
    """Both steps, the SWD calls, the selections and the overhead ratio are recorded with the prefix."""
    rec = BenchmarkRecorder("swd_overhead", ["--quick"])
    bench_swd_overhead.record(
        rec, "gpu ", bench_swd_overhead.measure(CPU, width=4, batch=2, rounds=1, steps=1)
    )
    assert "gpu overhead_ratio_per_round" in _gpu_quantities(rec)
    assert rec.notes["gpu overhead_ratio_of_medians"] > 0


def test_export_latency_gpu_section_runs_on_a_cpu(monkeypatch):
    """Latency of every variant and its ratio to dense are recorded per batch and layout."""
    monkeypatch.setitem(
        bench_export_latency.MODELS,
        "tiny",
        lambda: bench_export_latency.create_model(
            "resnet20", num_classes=10, in_channels=3, image_size=32, width=8, shortcut="B"
        ),
    )
    monkeypatch.setattr(bench_export_latency, "time_ms", lambda model, x, *args: float(model(x).shape[0]))
    rec = BenchmarkRecorder("export_latency", ["--quick"])
    bench_export_latency.measure_gpu(rec, CPU, ["tiny"], (1, 2), rounds=2)
    quantities = _gpu_quantities(rec)
    for variant in ("filter50", "tucker90"):
        for layout in ("nchw", "channels_last"):
            assert f"gpu tiny_{variant}_b2_{layout}_ratio" in quantities
    assert rec.summary["gpu tiny_tucker90_b2_nchw_ms"]["median"] == 2.0


def test_structured_selection_gpu_section_runs_on_a_cpu():
    """Both variants select the same entries (``measure`` checks it); the device search reads nothing."""
    rec = BenchmarkRecorder("structured_selection", ["--quick"])
    result = bench_structured_selection.measure(
        CPU, "resnet8", {"width": 4, "shortcut": "B"}, rounds=1, steps=1
    )
    bench_structured_selection.record(rec, "gpu ", "resnet8", result)
    variants = ("host_bisection", "device_search")
    assert _gpu_quantities(rec) == {
        *(f"gpu resnet8.{v}_{q}" for v in variants for q in ("ms", "host_reads")),
        "gpu resnet8.ratio_host_over_device",
    }
    assert rec.summary["gpu resnet8.device_search_host_reads"]["median"] == 0
    assert rec.summary["gpu resnet8.host_bisection_host_reads"]["median"] > 0
