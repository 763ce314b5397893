"""Exports record their input preprocessing: in the manifest, in the ONNX metadata, on the loaded model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
import torch
import yaml

import slimtrain
from slimtrain.cli import EXIT_OK, main
from slimtrain.compress import read_manifest, save_exported
from slimtrain.compress.onnx_export import PREPROCESSING_METADATA_KEY
from slimtrain.data import load_dataset
from slimtrain.data.digits import load_digits
from slimtrain.models import create_model

# The export path of docs/export.md's tour, so that its deployment snippet runs as written.
TOUR_EXPORT = Path("runs/resnet8-digits/exported/filter-0.5")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A tiny digits MLP run exported with ONNX, at the path the docs' tour uses."""
    root = tmp_path_factory.mktemp("prep")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "prep",
                "data": {"name": "digits"},
                "model": {"name": "mlp", "kwargs": {"widths": [16]}},
                "train": {"epochs": 1, "batch_size": 64, "max_steps": 3, "progress": False},
            }
        )
    )
    run = root / "run"
    assert main(["train", str(recipe), "--run-dir", str(run)]) == EXIT_OK
    out = root / TOUR_EXPORT
    args = ["export", str(run), "--level", "0.5", "--output", str(out), "--onnx", "--latency-batch-sizes"]
    assert main(args) == EXIT_OK
    return out


def test_manifest_records_the_datasets_preprocessing(export_dir):
    splits = load_dataset("digits")
    prep = read_manifest(export_dir)["preprocessing"]
    assert prep["dataset"] == "digits" and prep["layout"] == "NCHW"
    assert prep["mean"] == pytest.approx(list(splits.mean)) and prep["std"] == pytest.approx(list(splits.std))
    assert prep["input_shape"] == [1, 8, 8] == list(splits.input_shape) and prep["channels"] == 1
    assert prep["input_dtype"] == "float32"
    assert prep["num_classes"] == 10 == splits.num_classes
    assert prep["class_names"] == [str(d) for d in range(10)]


def test_recorded_preprocessing_reproduces_the_model_inputs(export_dir):
    """Raw digits (0..16 / 16) prepared with the recorded numbers are exactly the inputs the model saw."""
    prep = read_manifest(export_dir)["preprocessing"]
    raw = load_digits(None).test_inputs
    mean = torch.tensor(prep["mean"]).view(-1, 1, 1)
    std = torch.tensor(prep["std"]).view(-1, 1, 1)
    prepared = ((raw - mean) / std).to(getattr(torch, prep["input_dtype"]))
    torch.testing.assert_close(prepared, load_dataset("digits").test.inputs, rtol=0, atol=1e-6)


def test_onnx_file_carries_the_same_preprocessing(export_dir):
    properties = {p.key: p.value for p in onnx.load(str(export_dir / "model.onnx")).metadata_props}
    assert json.loads(properties[PREPROCESSING_METADATA_KEY]) == read_manifest(export_dir)["preprocessing"]


def test_loaded_model_exposes_it_and_keeps_it_when_saved_again(export_dir, tmp_path):
    prep = read_manifest(export_dir)["preprocessing"]
    model = slimtrain.load(export_dir)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.slimtrain_preprocessing == prep
    kwargs = read_manifest(export_dir)["base_model"]["kwargs"]
    again = save_exported(model, tmp_path / "again", base="mlp", base_kwargs=kwargs)
    assert read_manifest(again)["preprocessing"] == prep


def test_export_without_preprocessing_loads_with_none(tmp_path):
    spec = {"num_classes": 3, "in_channels": 1, "image_size": 4, "widths": [5]}
    path = save_exported(create_model("mlp", **spec), tmp_path / "m", base="mlp", base_kwargs=spec)
    assert read_manifest(path)["preprocessing"] is None
    assert slimtrain.load(path).slimtrain_preprocessing is None


def test_deployment_snippet_of_the_docs_runs(export_dir, monkeypatch, capsys):
    """docs/export.md's deployment snippet, run as written on an export at the tour's path."""
    doc = (Path(__file__).parents[2] / "docs" / "export.md").read_text()
    section = doc.split("### Deploying: the recorded preprocessing", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert str(TOUR_EXPORT) in snippet
    monkeypatch.chdir(export_dir.parents[len(TOUR_EXPORT.parts) - 1])
    exec(compile(snippet, "docs/export.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.fullmatch(r"\[('\d', ){4}'\d'\]\n", printed)
