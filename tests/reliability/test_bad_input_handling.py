"""Bad input: fuzzed recipes and method options, data and models the run cannot use, numerical trouble,
and files that must never be unpickled or half-trusted.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from torch import nn

import slimtrain.data.registry as data_registry
import slimtrain.models.registry as model_registry
from slimtrain.cli import main
from slimtrain.compress.exportable import to_exported
from slimtrain.compress.exported_format import load_exported, save_exported
from slimtrain.data import RawSplits, list_datasets
from slimtrain.errors import CheckpointError, ExportFormatError, RecipeError, TrainingDiverged
from slimtrain.experiments.sweeping import sweep
from slimtrain.models import list_models
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import Recipe, recipe_from_dict
from slimtrain.train.method import get_method_class
from slimtrain.train.trainer import Trainer

from .tiny_runs import cases, methods, tiny_tree, write_recipe

SOURCE = Path(__file__).resolve().parents[2] / "src" / "slimtrain"

# ---------------------------------------------------------------------------------------------------------
# Recipe fuzzing: one field of a valid recipe changed at a time.
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def stack():
    """Context managers entered by a test (temporary registry entries) are exited after it."""
    with contextlib.ExitStack() as entered:
        yield entered


def _leaves(schema: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf field (path, FieldInfo) of a config schema, descending into nested sections."""
    leaves = []
    for name, field in schema.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.extend(_leaves(annotation, (*prefix, name)))
        elif (*prefix, name) != ("method", "options"):
            leaves.append(((*prefix, name), field))
    return leaves


def _sections(schema: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every config section (where an unknown key must be refused)."""
    paths = [prefix]
    for name, field in schema.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths.extend(_sections(field.annotation, (*prefix, name)))
    return paths


def _bounds(metadata: list[Any]) -> dict[str, float]:
    out = {}
    for item in metadata:
        if hasattr(item, "metadata"):  # a FieldInfo inside Annotated[...]
            out.update(_bounds(item.metadata))
        for key in ("ge", "gt", "le", "lt"):
            if getattr(item, key, None) is not None and isinstance(
                item, getattr(annotated_types, key.title())
            ):
                out[key] = getattr(item, key)
    return out


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


# Values that are valid or invalid for reasons the type and bounds do not show (registries, validators).
SPECIAL: dict[tuple[str, ...], dict[str, list[Any]]] = {
    ("name",): {"valid": ["run-2", "a.b", "x_1"], "out_of_range": ["", "a/b", "..", "."]},
    ("data", "name"): {"valid": list_datasets(), "out_of_range": ["no-such-dataset"]},
    ("model", "name"): {"valid": list_models(), "out_of_range": ["no-such-model"]},
    ("method", "name"): {"valid": methods(), "out_of_range": ["no-such-method"]},
    ("evaluation", "levels"): {
        "valid": [[], [0.0], [0.5, 0.9, 0.99]],
        "out_of_range": [[1.0], [-0.1], [0.5, 2]],
    },
    ("schedule", "milestones"): {"valid": [[], [1.0], [0.5, 3]], "out_of_range": [[3, 1], [-1.0]]},
    # the tiny recipe sets no model.init_from, so only an empty exclusion list is valid
    # the tiny recipe trains in float64, where autocast is refused
    ("train", "precision"): {"valid": ["fp32"], "out_of_range": ["bf16", "fp16", "no-such-choice"]},
    ("model", "init_exclude"): {"valid": [[]], "out_of_range": [["fc"], ["classifier", "head"]]},
    # the tiny recipe names a registry model and dataset: a factory next to a name is refused, as is a path
    # that is not 'package.module:name' or cannot be imported
    ("model", "factory"): {"out_of_range": ["0", "no_colon", "no_such_pkg.mod:fn", "json:no_such_fn"]},
    ("data", "factory"): {"out_of_range": ["0", "no_colon", "no_such_pkg.mod:fn", "json:no_such_fn"]},
}
WRONG_TYPES: dict[Any, list[Any]] = {
    bool: ["maybe", 2, [True], {"a": 1}],
    int: ["three", [1], {"a": 1}, 1.5, True],
    float: ["fast", [0.1], {"a": 1}, True],
    str: [12, 1.5, ["a"], {"a": 1}],
}


def _number_strategies(kind: type, bounds: dict[str, float]) -> tuple[st.SearchStrategy, list[Any]]:
    """A strategy of valid values and a list of out-of-range values for an int or float field."""
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    out: list[Any] = []
    if kind is int:
        lo = None if low is None else int(low) + ("gt" in bounds)
        hi = None if high is None else int(high) - ("lt" in bounds)
        lo_eff = lo if lo is not None else -1000
        valid = st.integers(lo_eff, hi if hi is not None else lo_eff + 1000)
        if lo is not None:
            out += [lo - 1, lo - 1000]
        if hi is not None:
            out += [hi + 1, hi + 1000]
        return valid, out
    valid = st.floats(
        min_value=low if low is not None else -1e6,
        max_value=high if high is not None else (low if low is not None else 0) + 1e6,
        exclude_min="gt" in bounds,
        exclude_max="lt" in bounds,
        allow_nan=False,
        allow_infinity=False,
    )
    if low is not None:
        out += [low - 1.0] + ([low] if "gt" in bounds else [])
    if high is not None:
        out += [high + 1.0] + ([high] if "lt" in bounds else [])
    return valid, [*out, math.nan, math.inf, -math.inf]


def _cases(path: tuple[str, ...], field: Any) -> dict[str, st.SearchStrategy]:
    """Strategies of (value, valid) for one field, keyed by the kind of change."""
    annotation, optional = _split_optional(field.annotation)
    origin = typing.get_origin(annotation)
    special = SPECIAL.get(path, {})
    valid: list[st.SearchStrategy] = [st.just(v) for v in special.get("valid", [])]
    out_of_range: list[Any] = list(special.get("out_of_range", []))
    wrong: list[Any] = []
    if optional:
        valid.append(st.none())
    if origin is Literal:
        choices = typing.get_args(annotation)
        if path not in SPECIAL:
            valid.append(st.sampled_from(choices))
        out_of_range.append("no-such-choice")
        wrong += [7, ["x"]]
    elif annotation is bool:
        valid.append(st.booleans())
        wrong += WRONG_TYPES[bool]
    elif annotation in (int, float):
        strategy, outside = _number_strategies(annotation, _bounds(field.metadata))
        valid.append(strategy)
        out_of_range += outside
        wrong += WRONG_TYPES[annotation]
    elif annotation is str:
        if path not in SPECIAL:
            valid.append(st.text(alphabet="abcxyz-_0123456789", min_size=1, max_size=8))
        wrong += WRONG_TYPES[str]
    elif origin is tuple:
        element = typing.get_args(annotation)[0]
        bounds = _bounds(
            typing.get_args(element)[1:] if typing.get_origin(element) is typing.Annotated else []
        )
        strategy, outside = _number_strategies(float, bounds)
        valid.append(st.tuples(strategy, strategy).map(list))
        out_of_range += [[v, 0.5] for v in outside]
        wrong += ["fast", [0.5], {"a": 1}]
    elif origin is list:
        element = typing.get_args(annotation)[0]
        if path not in SPECIAL:
            item = {str: st.text(alphabet="abc.", min_size=1, max_size=5), int: st.integers(0, 3)}.get(
                element, st.floats(0, 1, exclude_max=True)
            )
            valid.append(st.lists(item, max_size=3))
        wrong += ["abc", {"a": 1}, [["nested"]]]
    elif origin is dict:
        valid.append(st.just({}))
        wrong += ["abc", [1, 2]]
    else:
        raise AssertionError(f"the fuzzer does not know the type of {'.'.join(path)}: {annotation}")
    strategies = {"valid": st.one_of(valid).map(lambda v: (v, True))} if valid else {}
    if out_of_range:
        strategies["out_of_range"] = st.sampled_from(out_of_range).map(lambda v: (v, False))
    if wrong:
        strategies["wrong_type"] = st.sampled_from(wrong).map(lambda v: (v, False))
    return strategies


def _named_keys(message: str) -> set[str]:
    """The keys an error message names: one per line, as ``unknown key 'k'`` or ``'k': ...`` (one problem is
    on the header's line).
    """
    keys = set()
    header, _, rest = message.partition("invalid recipe:")
    assert not header, message
    for line in rest.strip().splitlines():
        match = re.match(r"\s*(?:unknown key )?'([^']*)'", line)
        assert match, f"error line names no key: {line!r}"
        keys.add(match.group(1))
    return keys


def _assert_names_exactly(message: str, key: str) -> None:
    named = _named_keys(message)
    assert named, message
    assert all(k == key or k.startswith(key + ".") for k in named), f"expected only '{key}': {message}"


def _set(tree: dict, path: tuple[str, ...], value: Any) -> dict:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return tree


RECIPE_FIELDS = _leaves(Recipe)
RECIPE_SECTIONS = _sections(Recipe)


@settings(max_examples=400)
@given(data=st.data())
def test_fuzzed_recipe_field_is_accepted_or_refused_by_name(data):
    """Changing one field of a valid recipe: every valid value is accepted (and stored), every wrong type or
    out-of-range value raises ``RecipeError`` naming exactly that field, and an unknown key in any section
    is refused naming it.
    """
    tree = tiny_tree("dense")
    if data.draw(st.integers(0, 9), label="unknown key?") == 0:
        section = data.draw(st.sampled_from(RECIPE_SECTIONS), label="section")
        key = (*section, data.draw(st.sampled_from(["colour", "lr_typo", "epoch"]), label="key"))
        _set(tree, key, 1)
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(tree)
        assert f"unknown key '{'.'.join(key)}'" in str(info.value)
        _assert_names_exactly(str(info.value), ".".join(key))
        return
    path, field = data.draw(st.sampled_from(RECIPE_FIELDS), label="field")
    strategies = _cases(path, field)
    kind = data.draw(st.sampled_from(sorted(strategies)), label="change")
    value, valid = data.draw(strategies[kind], label="value")
    _set(tree, path, value)
    if valid:
        recipe = recipe_from_dict(tree)
        stored: Any = recipe
        for part in path:
            stored = getattr(stored, part)
        assert stored == (tuple(value) if isinstance(stored, tuple) else value)
    else:
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(tree)
        _assert_names_exactly(str(info.value), ".".join(path))


@pytest.mark.parametrize("method", methods())
@settings(max_examples=60)
@given(data=st.data())
def test_fuzzed_method_option_is_accepted_or_refused_by_name(method, data):
    """For every registered method, changing one option: valid values (by the schema's types and
    bounds) are accepted, or refused by a cross-field rule that names the option; wrong types, out-of-range
    values (NaN/inf and booleans for numbers included) and unknown option names raise ``RecipeError``
    naming exactly ``method.options.<name>``.
    """
    schema = get_method_class(method).Options
    tree = tiny_tree(method)
    fields = [(("method", "options", name), f) for name, f in schema.model_fields.items()]
    if not fields or data.draw(st.integers(0, 7), label="unknown option?") == 0:
        tree["method"]["options"]["no_such_option"] = 1
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(tree)
        _assert_names_exactly(str(info.value), "method.options.no_such_option")
        return
    path, field = data.draw(st.sampled_from(fields), label="option")
    strategies = _cases(path, field)
    kind = data.draw(st.sampled_from(sorted(strategies)), label="change")
    value, valid = data.draw(strategies[kind], label="value")
    _set(tree, path, value)
    if valid:
        try:
            recipe_from_dict(tree)
        except RecipeError as err:
            # Allowed only as a cross-field rule of the schema (an option valid alone but not with the
            # defaults of the others, e.g. a_min > a_max): reported on 'method.options', naming the option.
            assert _named_keys(str(err)) == {"method.options"}, f"valid {value!r} refused: {err}"
            assert path[-1] in str(err), f"cross-field refusal does not name {path[-1]}: {err}"
    else:
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(tree)
        _assert_names_exactly(str(info.value), ".".join(path))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=yes", "train.epochs"),
        ("optimizer.lr=.inf", "optimizer.lr"),
        ("optimizer.betas=[1.5, 0.9]", "optimizer.betas"),
        ("name=../elsewhere", "name"),
        ("train.bacth_size=3", "train.bacth_size"),
    ],
)
def test_bad_override_exits_2_naming_the_key(override, key, tmp_path, capsys):
    """A bad ``--set`` override makes ``slimtrain train`` exit with status 2 and a message naming the key,
    before anything is written.
    """
    recipe = write_recipe(tiny_tree("dense"), tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--set", override]) == 2
    _assert_names_exactly(capsys.readouterr().err.split(": ", 1)[1], key)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# Data the run cannot use.
# ---------------------------------------------------------------------------------------------------------


def _raw(n_train: int = 40, n_test: int = 20, shape: tuple[int, ...] = (1, 4, 4), classes: int = 3) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "train_inputs": torch.rand(n_train, *shape, generator=generator),
        "train_targets": torch.arange(n_train) % classes,
        "test_inputs": torch.rand(n_test, *shape, generator=generator),
        "test_targets": torch.arange(n_test) % classes,
        "num_classes": classes,
    }


def _with_nan(raw: dict) -> dict:
    raw["train_inputs"][5, 0, 1, 1] = math.nan
    return raw


def _label_out_of_range(raw: dict) -> dict:
    raw["test_targets"][3] = 7
    return raw


def _negative_label(raw: dict) -> dict:
    raw["train_targets"][0] = -1
    return raw


BAD_DATA = {
    "nan-inputs": (lambda: _with_nan(_raw()), "NaN or infinite"),
    "label-out-of-range": (lambda: _label_out_of_range(_raw()), "label 7 is out of range"),
    "negative-label": (lambda: _negative_label(_raw()), "label -1"),
    "no-channel-axis": (
        lambda: {**_raw(), "train_inputs": torch.rand(40, 4, 4), "test_inputs": torch.rand(20, 4, 4)},
        "N×C×H×W",
    ),
    "train-test-shapes-differ": (lambda: {**_raw(), "test_inputs": torch.rand(20, 1, 5, 5)}, "test samples"),
    "labels-not-matching-inputs": (
        lambda: {**_raw(), "train_targets": torch.zeros(39, dtype=torch.long)},
        "39",
    ),
    "empty-training-set": (lambda: _raw(n_train=0), "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_unusable_data_exits_2_naming_the_dataset_and_the_defect(case, tmp_path, capsys, monkeypatch, stack):
    """A dataset with NaN inputs, out-of-range or negative labels, inputs of the wrong rank, train/test
    shapes that differ, mismatched lengths or no training samples is refused by ``slimtrain train`` with
    status 2 and a message naming the recipe section, the dataset and the defect.
    """
    make, defect = BAD_DATA[case]
    name = f"reliability-{case}"
    stack.enter_context(data_registry.DATASETS.temporarily(name, lambda data_dir: RawSplits(**make())))
    tree = tiny_tree("dense", data={"name": name, "val_fraction": 0.0}, train={"batch_size": 16})
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert name in err and defect in err, err
    assert "'data'" in err


# ---------------------------------------------------------------------------------------------------------
# Models a method cannot handle.
# ---------------------------------------------------------------------------------------------------------


class _Gain(nn.Module):
    """A layer with a parameter but no ``weight`` (a learned per-feature gain)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def _grouped_conv_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.Flatten(),
        nn.Linear(4 * image_size * image_size, num_classes),
    )


def _weightless_layers_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    features = in_channels * image_size * image_size
    return nn.Sequential(
        nn.Flatten(),
        _Gain(features),
        nn.Linear(features, 12),
        nn.ReLU(),
        _Gain(12),
        nn.Linear(12, num_classes),
    )


def _bias_free_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    features = in_channels * image_size * image_size
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 12, bias=False), nn.ReLU(), nn.Linear(12, num_classes)
    )


AWKWARD_MODELS = {
    "grouped-convs": (_grouped_conv_net, ("2", "4")),
    "weightless-layers": (_weightless_layers_net, ("1", "4")),
    "bias-free-linears": (_bias_free_net, ("1", "3")),
}


@pytest.mark.parametrize(("method", "model"), cases(methods(), sorted(AWKWARD_MODELS)))
def test_awkward_model_trains_or_is_refused_naming_the_layer(
    method, model, tmp_path, capsys, monkeypatch, stack
):
    """Grouped/depthwise convolutions, parameterised layers without a ``weight``, and bias-free layers:
    every method either trains and sweeps such a model, or refuses it (status 2 when training; a
    ``ValueError`` when compressing) with a message naming an offending layer or the kind of layer the
    model lacks — never an unrelated crash mid-training.
    """
    factory, layers = AWKWARD_MODELS[model]
    name = f"reliability-{model}"
    stack.enter_context(model_registry.MODELS.temporarily(name, factory))
    tree = tiny_tree(method, model={"name": name, "kwargs": {}}, train={"max_steps": 3})
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    code = main(["train", str(recipe), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if code == 2:
        assert _names_a_layer_or_the_missing_kind(err, layers), err
        return
    assert code == 0, err
    method_class = get_method_class(method)
    structure = "native" if method_class.levels_chosen == "during_training" else method_class.structures[0]
    try:
        sweep(tmp_path / "run", structure=structure, levels=[0.5])
    except ValueError as error:
        assert _names_a_layer_or_the_missing_kind(str(error), layers), str(error)


def _names_a_layer_or_the_missing_kind(message: str, layers: tuple[str, ...]) -> bool:
    """Whether a refusal names an offending layer, or says which kind of layer or model is needed."""
    named = any(f"'{layer}'" in message or f" {layer}" in message for layer in layers)
    return named or "has no " in message or " needs the registry's " in message


# ---------------------------------------------------------------------------------------------------------
# Numerical trouble.
# ---------------------------------------------------------------------------------------------------------


def _poison_at(trainer: Trainer, step: int, value: float) -> str:
    """Make the first parameter of the prepared model non-finite just before ``step``; return its name."""
    model = trainer.components.model
    name, parameter = next(iter(model.named_parameters()))
    real = trainer.components.method.training_step

    def poisoned(model_, inputs, targets, ctx):
        if ctx.step == step:
            with torch.no_grad():
                parameter[(0,) * parameter.dim()] = value
        return real(model_, inputs, targets, ctx)

    trainer.components.method.training_step = poisoned
    return name


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("method", methods())
def test_non_finite_weights_stop_training_naming_layer_and_step(method, value, tmp_path):
    """A NaN or inf written into a layer's weights before step 1 stops training at step 1 with
    ``TrainingDiverged`` naming that layer (whatever the method does with it: forward pass, gradients, an
    SVD or a QR of the factors), and the checkpoint before it stays valid and finite — unless the method
    keeps its weights elsewhere and overwrites the model's (NN-BCD's solver), in which case training ends
    with finite weights.
    """
    trainer = Trainer(recipe_from_dict(tiny_tree(method)), tmp_path / "run")
    layer = _poison_at(trainer, 1, value)
    try:
        trainer.fit()
    except TrainingDiverged as error:
        message = str(error)
        assert "at step 1 " in message and layer in message, message
        state, _ = CheckpointStore(tmp_path / "run" / "checkpoints").load_latest()
        assert state["step"] == 1
    else:
        state, _ = CheckpointStore(tmp_path / "run" / "checkpoints").load_latest(final_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


class _NaNGradient(nn.Module):
    """Identity whose parameter gets a NaN gradient (0 · ∞ from ``sqrt`` at 0) from its fourth training call
    on (calls in eval mode, such as the check that the model fits the data, do not count).
    """

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        if self.training and self.calls >= 4:
            return x + 0.0 * torch.sqrt(self.p - self.p)
        return x


def _nan_gradient_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    features = in_channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 12), _NaNGradient(), nn.Linear(12, num_classes))


def test_nan_gradient_with_finite_loss_is_named(tmp_path, monkeypatch, capsys, stack):
    """A gradient that is NaN while the loss stays finite stops ``slimtrain train`` (status 1) naming the step
    it appeared at and the parameter. It is found at the next check (log and checkpoint steps: here every
    step), after the optimizer wrote NaN into the weights but before any checkpoint of them.
    """
    stack.enter_context(model_registry.MODELS.temporarily("reliability-nan-gradient", _nan_gradient_net))
    tree = tiny_tree("dense", model={"name": "reliability-nan-gradient", "kwargs": {}})
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "non-finite gradient in 2.p at step 3 " in err, err
    state, _ = CheckpointStore(tmp_path / "run" / "checkpoints").load_latest()
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_failed_factorization_is_reported_with_step(tmp_path):
    """A method whose step runs a Cholesky factorization of an indefinite matrix stops training with
    ``TrainingDiverged`` naming the step and the failed factorization (not a bare ``LinAlgError``).
    """
    trainer = Trainer(recipe_from_dict(tiny_tree("dense")), tmp_path / "run")
    real = trainer.components.method.training_step

    def factorizing(model, inputs, targets, ctx):
        if ctx.step == 2:
            torch.linalg.cholesky(-torch.eye(3, dtype=torch.float64))
        return real(model, inputs, targets, ctx)

    trainer.components.method.training_step = factorizing
    with pytest.raises(TrainingDiverged, match=r"factorization failed .* at step 2 "):
        trainer.fit()


# ---------------------------------------------------------------------------------------------------------
# Loading never unpickles arbitrary objects; exported manifests must match their tensors.
# ---------------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs code: it creates the file named by ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path, capsys):
    """A checkpoint whose checksum matches its manifest but which holds a pickled object with a code
    payload is refused by ``--resume`` (status 1, the file named) and the payload never runs.
    """
    tree = tiny_tree("dense")
    run = tmp_path / "run"
    marker = tmp_path / "payload-ran"
    store = CheckpointStore(run / "checkpoints")
    store.save({"model": {}, "payload": _Payload(str(marker))}, step=1)
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "step-00000001.pt" in err and "refused" in err
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        store.load_latest()
    assert not marker.exists()


def _unsafe_loads(path: Path) -> list[str]:
    """``torch.load`` calls without ``weights_only=True`` and plain ``pickle.load(s)`` calls in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        weights_only = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if (func.endswith("torch.load") and not weights_only) or func in ("pickle.load", "pickle.loads"):
            found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: {func}")
        if "allow_pickle" in {k.arg for k in node.keywords}:
            found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: allow_pickle")
    return found


# A model and its inputs, pickled by the same process a moment before, sent to a child for measuring.
TRUSTED_FULL_LOADS = {"metrics/memory.py"}


def test_no_code_path_unpickles_untrusted_files():
    """Across the package, every ``torch.load`` passes ``weights_only=True`` and nothing calls
    ``pickle.load``/``loads`` or ``allow_pickle`` (CIFAR archives go through a restricted unpickler),
    except the in-process hand-over listed in ``TRUSTED_FULL_LOADS``.
    """
    found = [
        hit
        for path in sorted(SOURCE.rglob("*.py"))
        for hit in _unsafe_loads(path)
        if hit.split(":")[0] not in TRUSTED_FULL_LOADS
    ]
    assert not found, found


def _edit_manifest(path: Path, edit) -> None:
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest["tensors"])
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("method", cases(methods()))
def test_exported_manifest_with_missing_or_extra_tensors_is_refused(method, tmp_path):
    """For every method, a trained and compressed model exports and reloads equal; a manifest that drops a
    tensor, or lists one the weights file does not hold, is refused with ``ExportFormatError`` naming it.
    """
    tree = tiny_tree(method, train={"max_steps": 2})
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "run")
    trainer.fit()
    comp = trainer.components
    structure = "native" if comp.method.levels_chosen == "during_training" else comp.method.structures[0]
    example = comp.splits.test.inputs[:2].to(torch.float64)
    compressed = to_exported(
        comp.method.compress(comp.model, structure, 0.5, example).eval(), structure, example
    )
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 8, **tree["model"]["kwargs"]}
    path = save_exported(
        compressed.double(), tmp_path / "export", base=tree["model"]["name"], base_kwargs=kwargs
    )
    reloaded = load_exported(path).double()
    torch.testing.assert_close(reloaded(example), compressed(example), rtol=0, atol=1e-12)

    first = next(iter(json.loads((path / "manifest.json").read_text())["tensors"]))
    _edit_manifest(path, lambda tensors: tensors.pop(first))
    with pytest.raises(ExportFormatError, match=re.escape(first)):
        load_exported(path)
    _edit_manifest(path, lambda tensors: tensors.update({first: {"shape": [1], "dtype": "float64"}}))
    _edit_manifest(path, lambda tensors: tensors.update({"ghost.weight": {"shape": [2], "dtype": "float64"}}))
    with pytest.raises(ExportFormatError, match=r"ghost\.weight"):
        load_exported(path)


def test_rank_collapsing_to_the_minimum_is_reported_with_layer_and_step():
    """A TDLRT tolerance so large that it would keep fewer directions than the minimum rank warns once per
    layer and mode with ``RankAtMinimumWarning`` naming the layer, the mode and the integrator step, and
    holds the rank at the minimum.
    """
    from slimtrain.lowrank import RankAtMinimumWarning, convert_to_lowrank
    from slimtrain.lowrank.integrator import TDLRT

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    convert_to_lowrank(model, rank_fraction=0.5, max_rank_fraction=1.0)
    integrator = TDLRT(model, lambda params: torch.optim.SGD(params, lr=0.05), tau=0.999)
    inputs, targets = torch.randn(32, 16, dtype=torch.float64), torch.randint(0, 3, (32,))

    def closure():
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss

    with pytest.warns(RankAtMinimumWarning) as caught:
        for _ in range(3):
            integrator.step(closure)
    messages = [str(w.message) for w in caught if issubclass(w.category, RankAtMinimumWarning)]
    assert messages and all("layer '0'" in m and "integrator step 0" in m for m in messages)
    assert len(messages) == len(set(messages))
    layer = model[0]
    assert layer.ranks == layer.min_ranks
