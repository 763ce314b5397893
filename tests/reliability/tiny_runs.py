"""Tiny recipes for every registered method, and helpers to run the CLI in a killable child process.

Every registered method gets a recipe small enough to train in well under a second: a one-hidden-layer MLP
on the embedded digits data, a handful of steps, float64 (so that "the same weights" can be checked bitwise
and tolerances are meaningful). Methods that need another model or options are listed in ``METHOD_TREES``;
a method that is not listed gets the default recipe with its default options, so a newly registered method
is covered without editing the tests.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.method import list_methods

BASE_TREE: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [12]}},
    "optimizer": {"lr": 0.05},
    "schedule": {"name": "cosine"},
    "train": {
        "epochs": 2,
        "batch_size": 128,
        "device": "cpu",
        "dtype": "float64",
        "progress": False,
        "tensorboard": False,
        "checkpoint_every_steps": 1,
        "log_every_steps": 1,
        "max_steps": 12,
    },
    "evaluation": {"levels": [0.0, 0.5]},
}

# LeNet-5 for methods that act on convolutions; a 4-wide ResNet-8 (BatchNorm, 1×1-conv shortcuts, which
# channel pruning can follow) for methods that gate channels through BatchNorm.
_TINY_CONVNET = {"model": {"name": "lenet5", "kwargs": {}}}
_TINY_RESNET = {"model": {"name": "resnet8", "kwargs": {"width": 4, "shortcut": "B"}}}

# Per-method changes to ``BASE_TREE`` (merged section by section).
METHOD_TREES: dict[str, dict[str, Any]] = {
    "sfw": {"optimizer": {"weight_decay": 0.0}},
    "group-lasso": _TINY_CONVNET,
    "nuclear-norm": _TINY_CONVNET,
    "prox-svd": _TINY_CONVNET,
    "swd-structured": _TINY_RESNET,
    "network-slimming": _TINY_RESNET,
}


def methods() -> list[str]:
    """Every registered method."""
    return list_methods()


def cases(*axes: list[str]) -> list[Any]:
    """``pytest.param`` sets over the product of ``axes``, each with a readable id."""
    return [pytest.param(*combination, id="-".join(combination)) for combination in itertools.product(*axes)]


def tiny_tree(method: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny valid recipe tree for ``method``; ``sections`` are merged into the named sections."""
    tree = copy.deepcopy(BASE_TREE)
    tree["name"] = f"tiny-{method}"
    tree["method"] = {"name": method, "options": {}}
    for changes in (METHOD_TREES.get(method, {}), sections):
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(tree.get(key), dict):
                tree[key] = {**tree[key], **copy.deepcopy(value)}
            else:
                tree[key] = copy.deepcopy(value)
    return tree


def write_recipe(tree: dict[str, Any], path: Path) -> Path:
    """Write a recipe tree as YAML and return its path."""
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def final_state(run_dir: Path) -> dict[str, Any]:
    """The verified final checkpoint of a finished run."""
    loaded = CheckpointStore(run_dir / "checkpoints").load_latest(final_only=True)
    assert loaded is not None, f"{run_dir} has no final checkpoint"
    return loaded[0]


def assert_same_state(actual: Any, expected: Any, where: str = "state") -> None:
    """Recursively assert bitwise equality of tensors and equality of plain values."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert torch.equal(actual, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same_state(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_state(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not str(k).endswith("seconds")}
    if isinstance(value, list | tuple):
        return [_without_timings(v) for v in value]
    return value


def trained_state(state: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint that must not depend on interruptions: weights, method state (without
    wall-clock timings such as a solver's per-sweep seconds), counters.
    """
    kept = {key: state[key] for key in ("model", "method", "step", "epoch", "grad_evals")}
    return _without_timings(kept)


def _cli_child(argv: list[str], setup: Any) -> None:
    # Runs in a forked child: silence the output, apply the fault-injection set-up, run the real CLI.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if setup is not None:
        setup()
    from slimtrain.cli import main

    os._exit(main(argv))


def start_cli(argv: list[str], setup: Any = None) -> multiprocessing.Process:
    """Run ``slimtrain <argv>`` in a forked child process (no interpreter start-up, same code path).

    ``setup`` is called in the child before the CLI runs, to inject a fault there only.
    """
    process = multiprocessing.get_context("fork").Process(target=_cli_child, args=(argv, setup))
    process.start()
    return process


def warm_up(run_dir: Path) -> None:
    """Train one step in this process, so forked children inherit the lazily imported modules and data."""
    from slimtrain.train.config import recipe_from_dict
    from slimtrain.train.trainer import Trainer

    Trainer(recipe_from_dict(tiny_tree("dense", train={"max_steps": 1})), run_dir).fit()
