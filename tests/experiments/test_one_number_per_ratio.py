"""One definition of each ratio everywhere: sweep rows, the report, `slimtrain export`, `slimtrain inspect`.

Each test trains a tiny digits run and reads the same level's numbers through every door (docs/metrics.md,
"One number per level").
"""

import json
import re

import pytest

import slimtrain
from slimtrain.cli import EXIT_OK, main
from slimtrain.experiments.report import write_report
from slimtrain.experiments.sweeping import sweep
from slimtrain.metrics import count_parameters
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

DATA = {"name": "digits", "val_fraction": 0.2}
QUIET = {"progress": False, "tensorboard": False}
TDLRT = {
    "name": "tdlrt-tiny",
    "data": DATA,
    "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}},
    "method": {"name": "tdlrt", "options": {"tau": 0.1, "max_rank": 8}},
    "optimizer": {"lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 6, **QUIET},
}
NNBCD = {
    "name": "nnbcd-tiny",
    "data": DATA,
    "model": {"name": "mlp", "kwargs": {"widths": [16, 16]}},
    "method": {"name": "nnbcd", "options": {"rank": 4}},
    "train": {"epochs": 2, "batch_size": 128, **QUIET},
}
DENSE = {
    "name": "dense-tiny",
    "data": DATA,
    "model": {"name": "mlp", "kwargs": {"widths": [48]}},
    "train": {"epochs": 1, "batch_size": 64, **QUIET},
    "evaluation": {"structure": "unstructured", "levels": [0.9]},
}


def _train(tmp_path_factory, tree):
    run_dir = tmp_path_factory.mktemp("runs") / tree["name"]
    Trainer(recipe_from_dict(tree), run_dir).fit()
    return run_dir


@pytest.fixture(scope="module")
def tdlrt_run(tmp_path_factory):
    return _train(tmp_path_factory, TDLRT)


@pytest.fixture(scope="module")
def nnbcd_run(tmp_path_factory):
    return _train(tmp_path_factory, NNBCD)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    return _train(tmp_path_factory, DENSE)


def _report_cell(run_dir, level, header):
    """The report.md cell under ``header`` in the row of ``level``."""
    write_report(run_dir)
    lines = [line for line in (run_dir / "report.md").read_text().splitlines() if line.startswith("|")]
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        named = cells[headers.index("level")]  # "sparsity 0.9", "tau 0.1", "as trained" (level 0)
        if float(named.split()[-1] if named != "as trained" else 0.0) == level:
            return cells[headers.index(header)]
    raise AssertionError(f"no report row at level {level}")


def _export(run_dir, level, capsys, *extra):
    out = run_dir / "exported" / f"x-{len(extra)}-{level:g}"
    args = ["export", str(run_dir), "--level", f"{level:g}", "--output", str(out), "--overwrite"]
    capsys.readouterr()
    assert main([*args, *extra]) == EXIT_OK
    return out, capsys.readouterr().out


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1).replace(",", ""))


def test_tdlrt_speedup_is_one_number_in_sweep_report_and_export(tdlrt_run, capsys):
    """TDLRT's theoretical speed-up (dense MACs / MACs of the factor products) is > 1 and the same in its
    sweep row, its report row and `slimtrain export`'s output; so are its MACs and compression ratio.
    """
    (row,) = sweep(tdlrt_run)
    level = row["requested_level"]
    assert row["theoretical_speedup"] > 1
    assert row["theoretical_speedup"] == pytest.approx(row["macs_dense"] / row["macs_effective"])
    assert _report_cell(tdlrt_run, level, "theoretical speed-up") == f"{row['theoretical_speedup']:.2f}"
    assert _report_cell(tdlrt_run, level, "compression ratio (all)") == f"{row['compression_ratio_all']:.2f}"
    _, out = _export(tdlrt_run, level, capsys, "--latency-batch-sizes")
    assert f"(theoretical speed-up {row['theoretical_speedup']:.2f}x)" in out
    assert f"MACs per sample {row['macs_effective']:,.0f} of {row['macs_dense']:,.0f} dense" in out
    assert f"compression ratio {row['compression_ratio_all']:.2f}x of the stored count" in out
    assert row["ranks_per_layer"]  # the trained ranks are still reported


def test_factorized_model_has_no_sparsity_derived_from_storage(tdlrt_run):
    """A factorized model stores fewer entries, which is its storage fraction (1/compression ratio), not
    a sparsity: its factors have no zeros, so its sparsity is 0 and the report says so in its own column.
    """
    (row,) = sweep(tdlrt_run)
    assert row["model_state"] == "exported"
    assert row["storage_fraction_prunable"] < 0.75
    assert row["storage_fraction_prunable"] == pytest.approx(1 / row["compression_ratio_prunable"])
    # Zeros only: trained factors hold none (before: 1 − stored/dense, about 1 − storage fraction).
    assert row["sparsity_prunable"] < 0.01 and row["sparsity_all"] < 0.01
    sparsity = _report_cell(tdlrt_run, row["requested_level"], "sparsity (prunable)")
    assert sparsity == f"{row['sparsity_prunable']:.4f}"
    storage = _report_cell(tdlrt_run, row["requested_level"], "storage fraction (prunable)")
    assert storage == f"{row['storage_fraction_prunable']:.4f}"


def test_nnbcd_tt_model_counts_the_dense_product_everywhere(nnbcd_run, capsys):
    """NN-BCD's TT layers rebuild the dense weight every forward pass (TT of the vectorised matrix): their
    MACs are the dense product's, so the speed-up is 1.00 in the sweep row, the report and the export, while
    the storage fraction (not a sparsity) shows the compression, equal in all three.
    """
    (row,) = sweep(nnbcd_run)
    level = row["requested_level"]
    assert row["macs_effective"] == row["macs_dense"] == 64 * 16 + 16 * 16 + 16 * 10
    assert row["theoretical_speedup"] == 1.0
    assert row["sparsity_prunable"] == 0.0
    assert row["storage_fraction_prunable"] == pytest.approx(1 / row["compression_ratio_prunable"])
    assert row["storage_fraction_prunable"] < 1
    assert _report_cell(nnbcd_run, level, "theoretical speed-up") == "1.00"
    assert _report_cell(nnbcd_run, level, "sparsity (prunable)") == "0.0000"
    _, out = _export(nnbcd_run, level, capsys, "--latency-batch-sizes")
    assert f"MACs per sample {row['macs_dense']:,.0f} of {row['macs_dense']:,.0f} dense" in out
    assert "(theoretical speed-up 1.00x)" in out
    assert f"compression ratio {row['compression_ratio_all']:.2f}x" in out


def test_csr_export_and_inspect_print_the_same_stored_count(dense_run, capsys):
    """`export --csr` prints the count `inspect` prints, and both are the parameters the file stores: the
    CSR values (non-zeros) and the biases, not the zeros of the dense tensors nor the CSR indices.
    """
    out_dir, out = _export(dense_run, 0.9, capsys, "--csr", "--latency-batch-sizes")
    exported = _number(r"parameters ([\d,]+) stored", out)
    assert main(["inspect", str(out_dir)]) == EXIT_OK
    inspected = _number(r"([\d,]+) parameters stored", capsys.readouterr().out)
    model = slimtrain.load(out_dir)
    biases = sum(m.bias.numel() for m in model.modules() if getattr(m, "bias", None) is not None)
    nonzero_weights = sum(int(m.values.count_nonzero()) for m in model.modules() if hasattr(m, "values"))
    assert exported == inspected == count_parameters(model, "all").stored == nonzero_weights + biases
    # The ratio is the sweep row's (non-zeros over the dense model), not 1 − stored/dense of a storage.
    (row,) = sweep(dense_run, levels=[0.9])
    assert f"compression ratio {row['compression_ratio_all']:.2f}x of the non-zero count" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["extra"]["params_stored_all"] == exported


def test_latency_lines_show_their_interquartile_range(dense_run, capsys):
    """Measured latencies and speed-ups are printed with their IQR, by `export` and `sweep --latency`."""
    iqr = r"[\d.]+ ms median \(IQR [\d.]+ ms\)[^;]*; measured speed-up [\d.]+x \(IQR [\d.]+-[\d.]+x\)"
    _, out = _export(dense_run, 0.5, capsys, "--structure", "unstructured", "--latency-batch-sizes", "1")
    assert re.search(r"CPU latency batch 1: " + iqr, out), out
    assert main(["sweep", str(dense_run), "--levels", "0.5", "--latency"]) == EXIT_OK
    out = capsys.readouterr().out
    for batch in (1, 256):
        assert re.search(rf"CPU latency batch {batch}: " + iqr, out), out


def test_report_reads_rows_written_before_the_storage_fraction(dense_run, tdlrt_run, tmp_path):
    """Sweep files of earlier versions still report: a factorized row's old "sparsity" (1 − stored/dense)
    becomes its storage fraction and its sparsity is shown as unknown; a masked row keeps its sparsity.
    """
    for run, structure in ((tdlrt_run, "native"), (dense_run, "unstructured")):
        (row,) = sweep(run, levels=None if structure == "native" else [0.9])
        old = {k: v for k, v in row.items() if k != "storage_fraction_prunable"}
        if structure == "native":
            old["sparsity_prunable"] = 1 - 1 / row["compression_ratio_prunable"]
        folder = tmp_path / structure
        folder.mkdir()
        (folder / f"sweep-{structure}.json").write_text(json.dumps({"run": str(run), "rows": [old]}))
        level = row["requested_level"]
        storage = _report_cell(folder, level, "storage fraction (prunable)")
        assert storage == f"{row['storage_fraction_prunable']:.4f}"
        sparsity = _report_cell(folder, level, "sparsity (prunable)")
        assert sparsity == ("–" if structure == "native" else f"{row['sparsity_prunable']:.4f}")
