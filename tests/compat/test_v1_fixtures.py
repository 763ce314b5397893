"""Format-1 files written before the layer package existed still load and run (tests/data/v1/README.md)."""

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

import slimtrain
from slimtrain.cli import EXIT_OK, main

V1 = Path(__file__).resolve().parent.parent / "data" / "v1"
EXPORTS = sorted(p.name for p in (V1 / "exports").iterdir())


def test_every_kind_of_v1_export_is_covered():
    """Filter-pruned, SVD, Tucker, CSR and TT exports, each recorded with format_version 1."""
    assert EXPORTS == ["csr", "filter", "svd", "tt", "tucker"]
    for name in EXPORTS:
        assert json.loads((V1 / "exports" / name / "manifest.json").read_text())["format_version"] == 1


@pytest.mark.parametrize("name", EXPORTS)
def test_v1_export_loads_with_equal_outputs(name):
    """slimtrain.load rebuilds each v1 export and reproduces the outputs the old code saved beside it."""
    model = slimtrain.load(V1 / "exports" / name)
    io = safetensors.torch.load_file(str(V1 / "exports" / name / "io.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["output"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("run", "level"), [("sfw", "0.8"), ("tdlrt", "0.1")])
def test_v1_run_directory_still_sweeps_and_exports(tmp_path, run, level, capsys):
    """A run directory trained by the old code sweeps and exports; the export reloads."""
    work = tmp_path / run
    shutil.copytree(V1 / "runs" / run, work)
    assert main(["sweep", str(work)]) == EXIT_OK
    out = tmp_path / "exported"
    assert (
        main(["export", str(work), "--level", level, "--output", str(out), "--latency-batch-sizes"])
        == EXIT_OK
    )
    capsys.readouterr()
    slimtrain.load(out)
