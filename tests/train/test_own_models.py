"""Models and datasets of one's own, named in a recipe by import path (``model.factory``, ``data.factory``).

The factories live in a small module written next to the test and put on ``sys.path``, as a user's package
would be; the Hugging Face model is ``transformers:ResNetForImageClassification`` built from a tiny config.
"""

import json
import re
import shutil
import sys

import pytest
import torch
import yaml

import slimtrain
from slimtrain._model_io import logits_of
from slimtrain.cli import EXIT_BAD_INPUT, EXIT_OK, main
from slimtrain.errors import FactoryImportError, RecipeError, RunBuildError, UnsupportedModelError
from slimtrain.models import build_model, model_arguments, resolve_factory
from slimtrain.train import Trainer, recipe_from_dict
from slimtrain.train.evaluate import evaluate
from slimtrain.train.trainer import build_run

HELPER = "slimtrain_own_models_helper"
HELPER_SOURCE = '''
import torch
from torch import nn

from slimtrain.data import RawSplits

CALLS = []


def tiny_net(num_classes, in_channels, *, width=8):
    """Takes no image_size: it must not be given one."""
    CALLS.append({"num_classes": num_classes, "in_channels": in_channels, "width": width})
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * in_channels, width), nn.ReLU(),
        nn.Linear(width, num_classes),
    )


class _Net(nn.Sequential):
    def __init__(self, num_classes, features=16):
        super().__init__(nn.Flatten(), nn.Linear(features, num_classes))


def open_net(*, num_classes, **kwargs):
    """Passes its keywords on, as torchvision's factories do: _Net takes no in_channels or image_size."""
    CALLS.append({"num_classes": num_classes, **kwargs})
    return _Net(num_classes=num_classes, **kwargs)


def tiny_data(data_dir, n=60, classes=3):
    generator = torch.Generator().manual_seed(0)
    def images(count):
        return torch.rand(count, 1, 4, 4, generator=generator)
    def labels(count):
        return torch.arange(count) % classes
    return RawSplits(images(n), labels(n), images(n // 2), labels(n // 2), classes)


def not_a_dataset(data_dir):
    return "nothing"


def three_classes(num_classes):
    """Ignores the dataset's class count."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


class _Halving(nn.Module):
    def forward(self, x):
        return x.mul_(0.5)  # edits its input in place


def inplace_net(num_classes):
    return nn.Sequential(_Halving(), nn.Flatten(), nn.Linear(64, num_classes))


def twelve_logits(num_classes):
    """A fixed head wider than the dataset's classes: it trains (the extra logits are never a target)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12))


def failing_net(num_classes):
    raise RuntimeError("boom while building")


def convolutional(num_classes, *, kernel=3):
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel, padding=kernel // 2), nn.Flatten(), nn.Linear(4 * 64, num_classes)
    )
'''
HF_MODEL = "transformers:ResNetForImageClassification"
HF_KWARGS = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}
TRAIN = {"epochs": 1, "batch_size": 128, "progress": False, "max_steps": 2}


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    """The helper module, importable by its name while this module's tests run."""
    folder = tmp_path_factory.mktemp("own_models")
    (folder / f"{HELPER}.py").write_text(HELPER_SOURCE)
    sys.path.insert(0, str(folder))
    try:
        yield resolve_factory(f"{HELPER}:tiny_net").__globals__
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(HELPER, None)


def _recipe(tmp_path, model, data=None, **extra):
    tree = {
        "output_dir": str(tmp_path / "runs"),
        "data": data or {"name": "digits"},
        "model": model,
        "train": TRAIN,
        **extra,
    }
    return recipe_from_dict(tree)


def test_factory_gets_only_the_dataset_arguments_its_signature_takes(tmp_path, helper):
    """tiny_net has no image_size parameter and gets none; a **kwargs (passed on, maybe) gets none."""
    recipe = _recipe(tmp_path, {"factory": f"{HELPER}:tiny_net", "kwargs": {"width": 4}})
    trainer = Trainer(recipe)
    assert helper["CALLS"][-1] == {"num_classes": 10, "in_channels": 1, "width": 4}
    trainer.fit()
    assert trainer.components.model[-1].out_features == 10

    base = resolve_factory(f"{HELPER}:open_net")
    common = {"num_classes": 3, "in_channels": 2, "image_size": 5}
    assert model_arguments(base, {}, common) == {"num_classes": 3}
    # A factory taking only **kwargs (as torchvision resnet18(*, weights, **kwargs)) gets num_classes.
    assert model_arguments(lambda *, weights=None, **kwargs: None, {}, common) == {"num_classes": 3}
    model = build_model(base, model_arguments(base, {"features": 8}, common))
    assert model(torch.zeros(1, 2, 2, 2)).shape == (1, 3)


def test_hugging_face_kwargs_contradicting_the_dataset_are_refused():
    """A num_labels in model.kwargs other than the class count would fail inside the loss: refused."""
    pytest.importorskip("transformers")
    base = resolve_factory(HF_MODEL)
    common = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    with pytest.raises(ValueError, match=r"num_labels=3 \(the dataset gives 10\).*comes from the dataset"):
        model_arguments(base, {**HF_KWARGS, "num_labels": 3}, common)
    assert model_arguments(base, {**HF_KWARGS, "num_labels": 10}, common)["num_labels"] == 10


def test_recipe_names_exactly_one_model_source():
    """Neither: the registry default mlp (written as before factories existed); both: refused naming them."""
    recipe = recipe_from_dict({})
    assert recipe.model.name == "mlp" and "factory" not in recipe.model_dump()["model"]
    assert "factory" not in recipe.model_dump()["data"]
    with pytest.raises(RecipeError, match=r"'model'.*not both"):
        recipe_from_dict({"model": {"name": "mlp", "factory": "torch.nn:Linear"}})


def test_unimportable_factory_exits_2_naming_the_module(tmp_path, capsys):
    """At train time a factory whose module is missing exits 2, naming key and module, with no traceback."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"factory": "no_such_pkg_xyz.nets:net"}, "train": TRAIN}))
    assert main(["train", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model.factory" in err and "no_such_pkg_xyz.nets" in err and "Traceback" not in err
    with pytest.raises(FactoryImportError, match="has no 'nope'"):
        resolve_factory("torch.nn:nope")


def test_dataset_factory(tmp_path, helper):
    """A data.factory builder is split and normalized like a registered dataset; the model sizes follow it."""
    data = {"factory": f"{HELPER}:tiny_data", "options": {"n": 60}, "val_fraction": 0.2}
    trainer = Trainer(_recipe(tmp_path, {"name": "mlp", "kwargs": {"widths": [8]}}, data))
    splits = trainer.components.splits
    assert (splits.num_classes, splits.input_shape) == (3, (1, 4, 4))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (48, 12, 30)
    assert abs(float(splits.train.inputs.mean())) < 1e-5  # normalized with the training split's statistics
    trainer.fit()
    with pytest.raises(RunBuildError, match=r"'data'.*RawSplits"):
        Trainer(_recipe(tmp_path, {"name": "mlp"}, {"factory": f"{HELPER}:not_a_dataset"}))


def test_logits_of_model_outputs():
    """A tensor as it is, a mapping's logits; anything else is refused naming its type."""
    logits = torch.randn(2, 3)
    assert logits_of(logits) is logits and logits_of({"logits": logits, "loss": None}) is logits
    with pytest.raises(UnsupportedModelError, match="tuple"):
        logits_of((logits,))


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory):
    """A tiny Hugging Face ResNet trained, swept and exported through the command line."""
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf")
    recipe = folder / "hf.yaml"
    tree = {
        "output_dir": str(folder / "runs"),
        "model": {"factory": HF_MODEL, "kwargs": HF_KWARGS},
        "train": TRAIN,
        "evaluation": {"levels": [0.0, 0.5]},
    }
    recipe.write_text(yaml.safe_dump(tree))
    run = folder / "runs" / "hf"
    assert main(["train", str(recipe)]) == EXIT_OK
    assert main(["sweep", str(run)]) == EXIT_OK
    assert main(["export", str(run), "--level", "0.5", "--latency-batch-sizes"]) == EXIT_OK
    return run, run / "exported" / "unstructured-0.5"


def test_hugging_face_model_trains_sweeps_exports_and_loads(hf_export, capsys):
    """The run stores the factory; the export records it with the config arguments; load reproduces it."""
    run, export = hf_export
    assert yaml.safe_load((run / "recipe.yaml").read_text())["model"]["factory"] == HF_MODEL
    assert len(json.loads((run / "sweep-unstructured.json").read_text())["rows"]) == 2
    manifest = json.loads((export / "manifest.json").read_text())
    base = manifest["base_model"]
    assert resolve_factory(base["factory"]) is resolve_factory(HF_MODEL)
    # The dataset's classes and channels went to the config (ResNetConfig has no image_size).
    assert base["kwargs"] == {**HF_KWARGS, "num_labels": 10, "num_channels": 1}
    assert main(["inspect", str(export)]) == EXIT_OK
    assert "ResNetForImageClassification" in capsys.readouterr().out
    loaded = slimtrain.load(export)
    test = build_run(slimtrain.load_recipe(run / "recipe.yaml")).splits.test
    assert evaluate(loaded, test)["accuracy"] == manifest["extra"]["acc_test_exported"]
    # A misspelt config setting would be stored and the default (large) model built: refused instead.
    with pytest.raises(TypeError, match="'hidden_sizs'"):
        model_arguments(resolve_factory(HF_MODEL), {"hidden_sizs": [8]}, {"num_classes": 10})


def test_export_whose_factory_is_gone_exits_2_naming_the_module(hf_export, tmp_path, capsys):
    """inspect/load of an export, and sweep of a run, whose recorded factory no longer imports: exit 2."""
    run, export = hf_export
    moved = shutil.copytree(export, tmp_path / "export")
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["base_model"]["factory"] = "gone_pkg_xyz.models:Net"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert main(["inspect", str(moved)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "gone_pkg_xyz.models" in err and "Traceback" not in err
    with pytest.raises(FactoryImportError, match=r"gone_pkg_xyz\.models"):
        slimtrain.load(moved)

    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("exported"))
    tree = yaml.safe_load((copy / "recipe.yaml").read_text())
    tree["model"]["factory"] = "gone_pkg_xyz.models:Net"
    (copy / "recipe.yaml").write_text(yaml.safe_dump(tree))
    for command in (["sweep", str(copy)], ["export", str(copy), "--level", "0.5"]):
        assert main(command) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "model.factory" in err and "gone_pkg_xyz.models" in err and "Traceback" not in err


def test_a_refused_compression_of_an_own_model_exits_2_naming_the_layer(tmp_path, capsys):
    """Channel pruning of a Hugging Face ViT (attention reshapes channels) is refused: exit 2, no trace."""
    pytest.importorskip("transformers")
    tree = {
        "output_dir": str(tmp_path / "runs"),
        "model": {
            "factory": "transformers:ViTForImageClassification",
            "kwargs": {
                "patch_size": 4,
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 16,
            },
        },
        "train": TRAIN,
        "evaluation": {"levels": [0.0, 0.5]},
    }
    recipe = tmp_path / "vit.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["train", str(recipe)]) == EXIT_OK
    capsys.readouterr()
    code = main(["export", str(tmp_path / "runs" / "vit"), "--structure", "filter", "--level", "0.5"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert "cannot follow channels" in err and "vit." in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"factory": f"{HELPER}:three_classes"}, r"logits of shape \(2, 3\).*needs \(2, 10\)"),
        ({"factory": "torch.nn:Linear", "kwargs": {"in_features": 64, "out_features": 10}}, r"cannot run on"),
        ({"factory": f"{HELPER}:failing_net"}, r"cannot be built: its factory raised RuntimeError: boom"),
        ({"factory": "os:getcwd"}, r"os:getcwd returned a str"),
    ],
    ids=["wrong-class-count", "wrong-input-shape", "factory-raises", "not-a-module"],
)
def test_a_model_that_does_not_fit_the_data_exits_2_when_the_run_is_built(
    tmp_path, helper, capsys, model, message
):
    """Checked once before training (one forward of two inputs): one line naming the model, exit 2, and the
    recipe's own name of the factory.
    """
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": model, "train": TRAIN}))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


def test_a_run_whose_model_code_changed_names_the_model(tmp_path, helper, capsys, monkeypatch):
    """After training, the factory builds another architecture: sweep, export and --resume say so (exit 1)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"factory": f"{HELPER}:convolutional"}, "train": TRAIN}))
    run = str(tmp_path / "run")
    assert main(["train", str(recipe), "--run-dir", run]) == EXIT_OK
    monkeypatch.setitem(helper["convolutional"].__kwdefaults__, "kernel", 5)  # the user's edit
    for argv in (["sweep", run], ["export", run, "--level", "0.5", "--latency-batch-sizes"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"does not fit model '{HELPER}:convolutional' as it is built now" in err, err


def test_the_fit_check_leaves_the_data_and_wider_heads_alone(tmp_path, helper):
    """The check runs on a copy of the inputs (a model may edit its input in place), and a head with more
    logits than classes is accepted, as the loss accepts it.
    """
    recipe = _recipe(tmp_path, {"factory": f"{HELPER}:inplace_net"})
    reference = _recipe(tmp_path, {"name": "mlp"})
    untouched = build_run(reference).splits.train.inputs[:2].clone()
    assert torch.equal(build_run(recipe).splits.train.inputs[:2], untouched)
    Trainer(_recipe(tmp_path / "wide", {"factory": f"{HELPER}:twelve_logits"})).fit()
