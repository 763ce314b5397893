"""The reference presets (configs/reference/<paper>/): each names its source and trains on its data shape."""

import re
from pathlib import Path

import pytest
import yaml

from slimtrain.train.config import load_recipe
from slimtrain.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent / "configs" / "reference"
PRESETS = sorted(ROOT.rglob("*.yaml"))
PAPERS = {"sfw", "tdlrt", "dlrt", "swd", "nnbcd"}

#: Image shape of each dataset the presets name (the test trains on synthetic data of that shape).
SHAPES = {"cifar10": [3, 32, 32], "mnist": [1, 28, 28]}
#: Small widths of the presets' large models, so that a few steps take a fraction of a second.
NARROW = {
    "resnet18": ["model.kwargs.width=4"],
    "resnet20": ["model.kwargs.width=4"],
    "vgg16_bn": ["model.kwargs.width_multiplier=0.0625"],
    "mlp": ["model.kwargs.widths=[24, 16]"],
}


def test_every_paper_has_presets():
    """The four papers and matrix DLRT each have a folder of presets."""
    assert {p.parent.name for p in PRESETS} == PAPERS


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_names_its_reference_and_trains_a_few_steps(path, tmp_path):
    """The header names the reference repository, a full commit hash and the files mirrored; the recipe
    validates and trains two steps on synthetic data of the dataset's shape (narrowed model).
    """
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    mirrors = re.search(r"Mirrors ([\w.-]+/[\w.-]+) @ ([0-9a-f]{40})\b", " ".join(header))
    assert mirrors, f"{path.name}: no 'Mirrors owner/repo @ <commit>' line"
    assert "docs/reproducing.md" in " ".join(header)
    recipe = load_recipe(path)
    tree = yaml.safe_load(path.read_text())
    shape = SHAPES[recipe.data.name]
    overrides = [
        "data.name=synthetic",
        f"data.options={{input_shape: {shape}, num_samples: 48, num_classes: 10}}",
        "train.epochs=1",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.tensorboard=false",
        *NARROW.get(recipe.model.name, []),
    ]
    if tree["method"]["name"] == "sfw":
        overrides.append("method.options.n_draws=2")
    small = load_recipe(path, overrides)
    results = Trainer(small, tmp_path / path.stem).fit()
    assert results["steps"] >= 1
