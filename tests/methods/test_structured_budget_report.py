"""Structured runs report the parameter count their export reaches next to their budget (issue #22, 2(c)).

A sweep row of a method that prunes channels to a parameter budget carries ``params_budget`` (the analytic
budget ⌊(1 − target)·N_total⌋) beside ``params_stored_all`` (the parameters of the model ``slimtrain export``
saves); both are checked here against independent counts, never against the library's own counting.
"""

import math

import pytest
import torch

import slimtrain
from slimtrain.cli import main
from slimtrain.experiments import sweeping
from slimtrain.experiments.exporting import export_run
from slimtrain.experiments.sweeping import sweep
from slimtrain.train.method import get_method_class
from slimtrain.train.trainer import Trainer

STRUCTURED = [("swd-structured", {"target": 0.5, "a_max": 1e3}), ("network-slimming", {"target": 0.5})]


def _distinct_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("method", "options"), STRUCTURED, ids=[m for m, _ in STRUCTURED])
def test_sweep_row_reports_budget_and_exported_count(tmp_path, trees, method_recipe, method, options):
    """``params_budget`` is ⌊(1 − target)·N⌋ of the dense model; ``params_stored_all`` is the parameter count
    of the exported model as ``slimtrain.load`` gives it back (what ``slimtrain export`` saved).
    """
    trainer = Trainer(method_recipe(trees["resnet"], method, **options), tmp_path / "run")
    trainer.fit()
    n_total = _distinct_parameters(trainer.components.model)  # masks keep every tensor's shape
    (row,) = sweep(tmp_path / "run", progress=False)
    assert row["params_budget"] == math.floor((1 - options["target"]) * n_total)
    result = export_run(tmp_path / "run", latency_batch_sizes=(), progress=False)
    loaded = slimtrain.load(result.path)
    assert row["params_stored_all"] == _distinct_parameters(loaded)
    # The export reports the same budget beside its count, in its result and in the manifest on disk.
    extra = slimtrain.compress.read_manifest(result.path)["extra"]
    assert result.params_budget == extra["params_budget"] == row["params_budget"]
    assert extra["params_stored_all"] == _distinct_parameters(loaded) <= row["params_budget"]
    assert row["params_stored_all"] < n_total  # channels were removed: not the dense model's count


def test_zero_padding_shortcuts_keep_the_channels_and_say_so(tmp_path, trees, method_recipe):
    """Zero-padding ("A") shortcuts (the reference channel model; the default refuses them): the export keeps
    the zeroed channels (Torch-Pruning cannot follow the padding), so the row's stored count is the dense one
    beside its budget, and a warning names the shortcut.
    """
    model = {**trees["resnet"]["model"], "kwargs": {"width": 4, "bn_after_add": True, "shortcut": "A"}}
    tree = {**trees["resnet"], "model": model}
    Trainer(
        method_recipe(tree, "network-slimming", target=0.5, channel_model="reference"), tmp_path / "run"
    ).fit()
    with pytest.warns(UserWarning, match="keeps the zeroed channels.*shortcut"):
        (row,) = sweep(tmp_path / "run", progress=False)
    assert row["params_budget"] < row["params_stored_all"]


def test_a_failing_channel_removal_is_said(tmp_path, trees, method_recipe, monkeypatch):
    """When the export cannot remove the channels, the row keeps its budget and a warning says why."""
    Trainer(method_recipe(trees["resnet"], "network-slimming", target=0.5), tmp_path / "run").fit()
    real = sweeping.to_exported

    def refusing(model, structure, example, **kwargs):
        if structure == "native":
            raise RuntimeError("channel flow refused for the test")
        return real(model, structure, example, **kwargs)

    monkeypatch.setattr(sweeping, "to_exported", refusing)
    with pytest.warns(UserWarning, match="keeps the zeroed channels.*channel flow refused for the test"):
        (row,) = sweep(tmp_path / "run", progress=False)
    assert "params_budget" in row


@pytest.mark.parametrize(
    ("method", "options", "budgeted"),
    [
        ("magnitude-ft", {"granularity": "channels", "target": 0.5}, True),
        ("gmp", {"granularity": "channels", "target": 0.5}, True),
        ("magnitude-ft", {"target": 0.5}, False),
        ("swd", {"target": 0.5}, False),
    ],
    ids=["magnitude-ft-channels", "gmp-channels", "magnitude-ft-weights", "swd"],
)
def test_only_channel_budget_methods_have_a_budget(trees, method, options, budgeted):
    """Channel baselines report the structured budget; methods pruning weights report none."""
    model = slimtrain.models.create_model(
        "resnet8", num_classes=10, in_channels=1, image_size=8, width=4, bn_after_add=True, shortcut="B"
    )
    cls = get_method_class(method)
    instance = cls(cls.Options(**options), None)
    expected = math.floor(0.5 * _distinct_parameters(model)) if budgeted else None
    assert instance.params_budget(model) == expected


def test_export_of_a_method_without_budget_records_none(tmp_path, trees, method_recipe):
    """An unstructured run's export has no ``params_budget``, in its result or its manifest."""
    Trainer(method_recipe(trees["resnet"], "magnitude-ft", target=0.5), tmp_path / "run").fit()
    result = export_run(tmp_path / "run", latency_batch_sizes=(), progress=False)
    assert result.params_budget is None
    assert "params_budget" not in slimtrain.compress.read_manifest(result.path)["extra"]


def test_the_export_command_prints_the_budget_beside_the_stored_count(tmp_path, trees, method_recipe, capsys):
    """``slimtrain export`` says whether the stored count meets the budget, and compares nothing when
    ``--round-to`` changes the stored count.
    """
    Trainer(method_recipe(trees["resnet"], "network-slimming", target=0.5), tmp_path / "run").fit()
    run = str(tmp_path / "run")
    assert main(["export", run, "--latency-batch-sizes", "--output", str(tmp_path / "plain")]) == 0
    budget = slimtrain.compress.read_manifest(tmp_path / "plain")["extra"]["params_budget"]
    assert f"parameter budget of the training {budget:,}: met" in capsys.readouterr().out
    rounded = ["--round-to", "8", "--output", str(tmp_path / "rounded")]
    assert main(["export", run, "--latency-batch-sizes", *rounded]) == 0
    assert f"{budget:,}: not compared (--csr and --round-to" in capsys.readouterr().out
