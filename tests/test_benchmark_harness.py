import json

import pytest
from benchmarks.harness import BenchmarkRecorder


def test_saved_json_has_provenance_and_md_has_medians(tmp_path):
    """The JSON holds the provenance fields and per-round values; the md table lists each median.

    Provenance: command, commit, date, machine, torch version, mode.
    """
    rec = BenchmarkRecorder("toy", ["--full", "--size", "3"])
    rec.add("latency_ms_b1", [3.0, 1.0, 2.0], unit="ms")
    rec.add("speedup", [1.25], unit="x")
    rec.note("threads", 2)
    path = rec.save(tmp_path)
    data = json.loads(path.read_text())
    for key in ("command", "commit", "date", "machine", "torch_version", "mode", "results", "notes"):
        assert key in data
    assert data["command"] == "python -m benchmarks.bench_toy --full --size 3"
    assert data["mode"] == "full"
    for key in ("cpu", "logical_threads", "torch_threads", "gpu"):
        assert key in data["machine"]
    r = data["results"]["latency_ms_b1"]
    assert (r["median"], r["min"], r["max"], r["rounds"], r["values"]) == (2.0, 1.0, 3.0, 3, [3.0, 1.0, 2.0])
    md = (tmp_path / "toy.md").read_text()
    assert "| latency_ms_b1 | ms | 2 | 1 | 3 | 3 |" in md
    assert "| speedup | x | 1.25 | 1.25 | 1.25 | 1 |" in md
    assert data["notes"] == {"threads": 2}


def test_command_names_the_module_that_ran(tmp_path):
    """A module writing results under another name records itself, not ``bench_<name>``, as the command."""
    rec = BenchmarkRecorder("toy_mnist", ["--full", "--dataset", "mnist"], module="bench_toy")
    assert rec.command == "python -m benchmarks.bench_toy --full --dataset mnist"
    assert json.loads(rec.save(tmp_path).read_text())["command"] == rec.command


def test_duplicate_quantity_and_empty_values_are_rejected():
    """Adding a quantity twice or with no values raises an error naming the quantity."""
    rec = BenchmarkRecorder("toy", [])
    assert rec.mode == "quick"
    rec.add("a", [1.0], unit="ms")
    with pytest.raises(ValueError, match="'a'"):
        rec.add("a", [2.0], unit="ms")
    with pytest.raises(ValueError, match="'b'"):
        rec.add("b", [], unit="ms")
