"""Recipes: YAML files validated into typed configuration objects.

A recipe names the data, model, method (with its own typed options), optimizer and schedule, training length,
evaluation levels and output directory. Everything is validated before any work starts; an unknown key, a
wrong type or an out-of-range value raises :class:`RecipeError` naming the key (and, for unknown keys, the
valid choices).
"""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from slimtrain.errors import RecipeError


def _is_number(annotation: Any) -> bool:
    """Whether a field's annotation is ``int`` or ``float`` (possibly optional) and not ``bool``."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(a in (int, float) for a in args)
    return False


class _Strict(BaseModel):
    """Base for every config section: unknown keys are errors and assignments are validated.

    Numbers must be finite, and a boolean is not accepted for a number (YAML's ``epochs: yes`` would
    otherwise silently mean one epoch).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError("expected a number, got a boolean")
        return value


def _path_component(value: str) -> str:
    """Reject names that are not a single file-name component (they choose the run directory)."""
    if value in ("", ".", "..") or "/" in value or "\\" in value:
        raise ValueError("must be a non-empty file name without '/', '\\', '.' or '..'")
    return value


def _importable(value: str | None) -> str | None:
    """Refuse a factory import path that cannot be imported now (the message names the module)."""
    if value is not None:
        from slimtrain.models.factory import resolve_factory

        resolve_factory(value)  # a FactoryImportError is a ValueError: reported under the key
    return value


class _Source(_Strict):
    """A section naming its source by a registered ``name`` or a ``factory`` import path (data, model).

    Subclasses declare both fields and :meth:`_source_names`: what a source is, the default name and the
    registered names.
    """

    @classmethod
    def _source_names(cls) -> tuple[str, str, list[str]]:
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        # A section without ``name`` or ``factory`` gets the default ``name``.
        if isinstance(data, dict) and data.get("name") is None and data.get("factory") is None:
            return {**data, "name": cls._source_names()[1]}
        return data

    _factory_importable = field_validator("factory", check_fields=False)(_importable)

    @field_validator("name", check_fields=False)
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        kind, _, names = cls._source_names()
        if value is not None and value not in names:
            raise ValueError(f"unknown {kind}; registered {kind}s: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> _Source:
        if getattr(self, "name", None) is not None and getattr(self, "factory", None) is not None:
            raise ValueError(
                "set one of 'name' (registered) and 'factory' (an import path 'package.module:name'), "
                "not both"
            )
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only the source in use is written, so a registry recipe (and its run identity) reads as it did.
        tree = handler(self)
        tree.pop("factory" if getattr(self, "factory", None) is None else "name", None)
        return tree

    @property
    def label(self) -> str:
        """The registered name or the factory's import path, for messages."""
        return getattr(self, "factory", None) or getattr(self, "name", None) or ""


class DataConfig(_Source):
    """Which dataset to train on and how to split it: a registered ``name`` or a ``factory`` import path."""

    name: str | None = Field(None, description="a registered dataset (default digits, unless factory is set)")
    factory: str | None = Field(
        None,
        description="'package.module:builder' called as builder(data_dir, **options) -> RawSplits, like a "
        "registered dataset's builder",
    )
    data_dir: str | None = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    augment: bool = False
    on_device: Literal["auto", True, False] = Field(
        "auto", description="keep the data on the training device (auto: if it fits), or pinned host batches"
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def _source_names(cls) -> tuple[str, str, list[str]]:
        from slimtrain.data import list_datasets

        return "dataset", "digits", list_datasets()


# Model arguments the trainer takes from the dataset (``build_run``), so never recipe keys.
_FROM_DATASET = {
    "num_classes": "its number of classes",
    "in_channels": "the number of channels of its images",
    "image_size": "the height of its images",
}


class ModelConfig(_Source):
    """A registered ``name`` or a ``factory`` import path, keyword arguments, and weights to start from."""

    name: str | None = Field(None, description="a registered model (default mlp, unless factory is set)")
    factory: str | None = Field(
        None,
        description="'package.module:name' of a function or class returning the model, or a Hugging Face "
        "PreTrainedModel class (built from its config class with kwargs); gets num_classes, in_channels, "
        "image_size where it takes them",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    init_from: str | None = Field(
        None,
        description="trained weights loaded before the method prepares the model: a .safetensors file, a "
        "checkpoint file, a run directory or an exported model (slimtrain.train.init_from)",
    )
    init_exclude: list[str] | None = Field(
        None, description="module paths not loaded from init_from, e.g. [classifier] for another class count"
    )

    @field_validator("init_from")
    @classmethod
    def _non_empty_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a path (or null)")
        return value

    @field_validator("init_exclude")
    @classmethod
    def _exclude_needs_init_from(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value and info.data.get("init_from") is None:
            raise ValueError("leaves modules out of model.init_from, which is not set")
        if value and not all(value):
            raise ValueError("module paths must be non-empty")
        return value

    @field_validator("kwargs")
    @classmethod
    def _not_from_dataset(cls, value: dict[str, Any]) -> dict[str, Any]:
        given = {key: value[key] for key in _FROM_DATASET if key in value}
        if given:  # reported per key by `_format_errors`
            raise PydanticCustomError("set_from_dataset", "set from the dataset", {"given": given})
        return value

    @classmethod
    def _source_names(cls) -> tuple[str, str, list[str]]:
        from slimtrain.models import list_models

        return "model", "mlp", list_models()


_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimizerConfig(_Strict):
    """The optimizer a method builds for its trainable parameters (methods may ignore parts of it)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)


class PlateauConfig(_Strict):
    """``schedule.name: plateau``: the rate cut when the epoch's mean training loss stops decreasing.

    The rule and defaults of ``torch.optim.lr_scheduler.ReduceLROnPlateau`` in mode ``min``, applied at the
    end of each completed epoch. Rates (``min_lr``) are in the units of ``optimizer.lr``.
    """

    factor: float = Field(0.1, gt=0.0, lt=1.0, description="lr *= factor at a plateau")
    patience: int = Field(10, ge=0, description="epochs without improvement tolerated before a cut")
    threshold: float = Field(1e-4, ge=0.0, description="how much a loss must beat the best to improve")
    threshold_mode: Literal["rel", "abs"] = Field(
        "rel", description="rel: loss < best·(1 − threshold); abs: loss < best − threshold"
    )
    cooldown: int = Field(0, ge=0, description="epochs after a cut during which bad epochs are not counted")
    min_lr: float = Field(0.0, ge=0.0, description="the rate is never cut below this")
    eps: float = Field(1e-8, ge=0.0, description="a cut smaller than this is skipped")


class ScheduleConfig(_Strict):
    """Learning-rate schedule: a factor of each param group's initial learning rate, set before every step."""

    name: Literal["constant", "linear", "cosine", "multistep", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    milestones: list[float] = Field(
        default_factory=list, description="multistep: epochs at which lr *= gamma"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    final_lr_fraction: float = Field(0.0, ge=0.0, le=1.0, description="linear/cosine: lr at the end / lr0")
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        if any(m < 0 for m in value) or value != sorted(value):
            raise ValueError("milestones must be non-negative and increasing")
        return value


class TrainConfig(_Strict):
    """Length of training and the loop's bookkeeping."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1, description="per process; the global batch is batch_size * world_size")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="forward passes under autocast in bf16 or fp16 (fp16 with loss scaling)"
    )
    compile: bool = Field(False, description="torch.compile the model's forward pass")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (None: default)")
    checkpoint_every_steps: int = Field(0, ge=0, description="0: checkpoint only at each epoch end")
    log_every_steps: int = Field(10, ge=1)
    progress: bool = True
    tensorboard: bool = Field(True, description="also log to TensorBoard when the package is installed")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many steps (for tests and smoke runs)"
    )

    @field_validator("precision")
    @classmethod
    def _low_precision_needs_float32(cls, value: str, info: ValidationInfo) -> str:
        dtype = info.data.get("dtype", "float32")
        if value != "fp32" and dtype != "float32":
            raise ValueError(f"{value} autocasts float32 weights; it needs train.dtype float32, not {dtype}")
        return value


class EvaluationConfig(_Strict):
    """Which compression structure the sweep applies, at which levels."""

    structure: Literal["unstructured", "filter", "lowrank", "native"] = "unstructured"
    levels: list[float] | None = Field(
        None, description="None: the method's default levels for the structure"
    )
    bn_recalibration: bool = False
    bn_recalibration_batches: int = Field(20, ge=1)
    batch_size: int = Field(512, ge=1)

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not 0.0 <= level < 1.0 for level in value):
            raise ValueError("levels are fractions in [0, 1)")
        return value


class MethodConfig(_Strict):
    """A registered method and its options; the options are validated by the method's own schema."""

    name: str = "dense"
    options: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    """A complete, validated training recipe."""

    name: str = "run"
    seed: int = Field(0, ge=0, lt=2**63)
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    _name_is_a_file_name = field_validator("name")(_path_component)

    def method_options(self) -> BaseModel:
        """Return the method's options as its typed options object."""
        from slimtrain.train.method import get_method_class

        return get_method_class(self.method.name).Options.model_validate(self.method.options)

    def to_yaml(self) -> str:
        """Return the fully resolved recipe as YAML (every default written out)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _valid_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Return the field names of the config section at ``loc`` below ``root``, if it is a config section."""
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def _format_errors(err: ValidationError, *, prefix: tuple[str, ...] = (), root: type[BaseModel]) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(str(p) for p in item["loc"])
        key = ".".join(prefix + loc) or "<recipe>"
        if item["type"] == "set_from_dataset":
            for name, value in item["ctx"]["given"].items():
                lines.append(
                    f"'{key}.{name}': set from the dataset ({_FROM_DATASET[name]}); "
                    f"remove it from the recipe (got {value!r})"
                )
        elif item["type"] == "extra_forbidden":
            valid = _valid_keys(root, loc[:-1])
            lines.append(f"unknown key '{key}'; valid keys here: {', '.join(valid or [])}")
        else:
            message = item["msg"]
            if item["type"] == "value_error" and message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            lines.append(f"'{key}': {message} (got {item.get('input')!r})")
    return recipe_problems(lines)


def recipe_problems(lines: list[str]) -> str:
    """The message of an invalid recipe: one problem on one line, several as a list under the header."""
    if len(lines) == 1:
        return f"invalid recipe: {lines[0]}"
    return "invalid recipe:\n  " + "\n  ".join(lines)


def _set_override(tree: dict[str, Any], dotted: str, raw: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (so 0.1, true, [1, 2] work)."""
    parts = dotted.split(".")
    if not all(parts):
        raise RecipeError(f"invalid override key '{dotted}'")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def parse_overrides(pairs: list[str]) -> list[tuple[str, str]]:
    """Split ``key=value`` strings from the command line."""
    result = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"override '{pair}' is not of the form key=value")
        result.append((key.strip(), value))
    return result


def recipe_from_dict(tree: dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """Validate a recipe given as a (YAML-like) dictionary, after applying ``key=value`` overrides."""
    tree = json.loads(json.dumps(tree))  # a deep copy that also rejects non-plain values early
    for key, value in parse_overrides(overrides or []):
        _set_override(tree, key, value)
    try:
        recipe = Recipe.model_validate(tree)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, root=Recipe)) from None
    recipe.method.options = resolve_method_options(recipe.method.name, recipe.method.options)
    return recipe


def resolve_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A method's options validated by its own schema, with every default filled in.

    Raises:
        RecipeError: naming the unknown method, or every rejected option.
    """
    from slimtrain.train.method import get_method_class

    try:
        options_model = get_method_class(name).Options
    except KeyError as err:
        raise RecipeError(recipe_problems([f"'method.name': {err.args[0]}"])) from None
    problems = _number_problems(options_model, options, prefix="method.options")
    if problems:
        raise RecipeError(recipe_problems(problems))
    try:
        parsed = options_model.model_validate(options)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, prefix=("method", "options"), root=options_model)) from None
    return parsed.model_dump(mode="json")


def _number_problems(schema: type[BaseModel], raw: dict[str, Any], *, prefix: str) -> list[str]:
    """Booleans or NaN/inf given for number fields of a method's options schema.

    Method schemas are plain pydantic models written by each plugin; this applies the recipe's own rules
    for numbers (see :class:`_Strict`) to them too.
    """
    problems = []
    for key, value in raw.items():
        field = schema.model_fields.get(key)
        if field is None or not _is_number(field.annotation):
            continue
        if isinstance(value, bool):
            problems.append(f"'{prefix}.{key}': expected a number, got a boolean (got {value!r})")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"'{prefix}.{key}': must be a finite number (got {value!r})")
    return problems


def _read_tree(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(tree).__name__}")
    tree.setdefault("name", path.stem)
    return tree


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a YAML recipe.

    Args:
        path: the YAML file.
        overrides: ``a.b=value`` strings applied before validation (values parsed as YAML).

    Raises:
        RecipeError: the file is missing or not a mapping, or a key is unknown, mistyped or out of range.
    """
    return recipe_from_dict(_read_tree(Path(path)), overrides)


def with_legacy_options(tree: dict[str, Any]) -> dict[str, Any]:
    """A run's stored recipe tree with the method options it predates set to what it was trained with.

    A method's options schema may declare ``legacy_defaults``: options whose default changed after they
    were added (``channel_model``: the fx tracer's gates before it existed). A stored run that lacks one
    computed the legacy value, not the current default.
    """
    method = tree.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("options", {}), dict):
        return tree
    from slimtrain.train.method import get_method_class

    try:
        legacy = getattr(get_method_class(method.get("name", "dense")).Options, "legacy_defaults", {})
    except KeyError:  # an unknown method: reported where the tree is validated
        return tree
    options = method.get("options", {})
    missing = {key: value for key, value in legacy.items() if key not in options}
    return {**tree, "method": {**method, "options": {**options, **missing}}} if missing else tree


def load_stored_recipe(path: str | Path) -> Recipe:
    """Load a run's stored ``recipe.yaml``, with the options it predates as it was trained with them.

    Raises:
        RecipeError: as :func:`load_recipe`, the message starting with ``path`` (the run's own recipe).
    """
    tree = _read_tree(Path(path))  # its errors name the file already
    try:
        return recipe_from_dict(with_legacy_options(tree))
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from err
