"""Start a run from trained weights: the recipe keys ``model.init_from`` and ``model.init_exclude``.

``model.init_from`` names one of

- a **safetensors file** (``*.safetensors``): a state dict, as ``safetensors.torch.save_model`` writes;
- a **checkpoint file** (any other file): a ``torch.save`` of a state dict, of ``{"model": state_dict, ...}``
  (a slimtrain training checkpoint, ``checkpoints/final.pt``) or of ``{"state_dict": ...}``; read with
  ``torch.load(weights_only=True)``, so nothing but tensors and plain values is unpickled;
- a **run directory** (it holds ``checkpoints/``): its final checkpoint, checksum verified;
- an **exported model** (a directory with ``manifest.json``, see ``docs/export.md``): its weights, checksum
  verified, when the export keeps the architecture of its base model (no layer replaced, no channel removed;
  masks folded into zeros are fine). A thinned or factorized export is refused, naming its changed layers.

The weights are loaded into the freshly built model *before* the method prepares it, so a method that
converts layers (TDLRT, DLRT, fixed-rank, TT-SGD) converts the loaded weights. Keys are mapped first:
``_orig_mod.`` segments (``torch.compile``) are removed, and a ``module.`` (DDP) or ``model.`` (wrapper)
prefix that every key carries and no key of the model does is stripped. Loading is strict: every tensor of
the model must come from the file with its shape, and every tensor of the file must be used, except below the
module paths of ``model.init_exclude`` (e.g. ``[classifier]`` to keep a freshly initialised classifier when
the class count differs). Otherwise :class:`~slimtrain.errors.RunBuildError` names the missing, unexpected and
mismatching keys with their shapes. Tied parameters stored once (as ``safetensors.torch.save_model`` does)
count as present.

The SHA-256 of the file actually read (:func:`init_weights_file`) is part of the run identity
(:mod:`slimtrain.train.identity`). Usage: ``docs/tutorial-compress-trained.md``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import yaml
from torch import nn

from slimtrain.errors import RunBuildError
from slimtrain.io import sha256_file
from slimtrain.train.checkpoint import MANIFEST, CheckpointStore

if TYPE_CHECKING:
    from slimtrain.train.config import ModelConfig

__all__ = [
    "InitSource",
    "init_weights_file",
    "load_init_weights",
    "map_keys",
    "read_init_state",
    "resolve_init_source",
]

_KEY = "'model.init_from'"
# A module path `torch.compile` inserts wherever a module was compiled; no model names a module so.
_COMPILE_SEGMENT = "_orig_mod"
# Leading prefixes of wrappers: DistributedDataParallel (`module.`) and training wrappers (`model.`).
_WRAPPER_PREFIXES = ("module.", "model.")
_SHOWN = 8  # keys listed per kind of problem in an error


@dataclass(frozen=True)
class InitSource:
    """Where ``model.init_from`` points and the weights file it resolves to.

    Attributes:
        kind: ``"safetensors"``, ``"checkpoint"``, ``"run"`` or ``"export"``.
        path: The path as given (user-expanded).
        weights_file: The file whose tensors are loaded; its SHA-256 is part of the run identity.
        described_as: What the source was made from, for error messages (e.g. ``run of model 'lenet5'``).
    """

    kind: Literal["safetensors", "checkpoint", "run", "export"]
    path: Path
    weights_file: Path
    described_as: str


def _final_checkpoint(run_dir: Path) -> Path | None:
    finals = [e for e in CheckpointStore(run_dir / "checkpoints").entries() if e["final"]]
    return run_dir / "checkpoints" / finals[-1]["file"] if finals else None


def _json(path: Path) -> dict[str, Any]:
    try:
        tree = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunBuildError(f"{_KEY}: {path} cannot be read as JSON ({err})") from None
    if not isinstance(tree, dict):
        raise RunBuildError(f"{_KEY}: {path} is not a JSON object")
    return tree


def _run_description(run_dir: Path) -> str:
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        return f"run directory {run_dir}"
    try:
        tree = yaml.safe_load(recipe_path.read_text()) or {}
        model = tree["model"].get("name") or tree["model"]["factory"]
        method = tree["method"]["name"]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return f"run directory {run_dir}"
    return f"run directory {run_dir} (model '{model}', method '{method}')"


def resolve_init_source(path: str | Path) -> InitSource:
    """Classify ``path`` (see the module docstring) and find the weights file it stands for.

    Raises:
        RunBuildError: ``path`` does not exist, is a directory that is neither a run nor an export, or is a
            run directory without a final checkpoint.
        CheckpointError: The run's checkpoint manifest is corrupted.
    """
    path = Path(path).expanduser()
    if path.is_file():
        kind: Literal["safetensors", "checkpoint"] = (
            "safetensors" if path.suffix == ".safetensors" else "checkpoint"
        )
        return InitSource(kind, path, path, f"{kind} file {path}")
    if not path.is_dir():
        raise RunBuildError(f"{_KEY}: {path} does not exist")
    if (path / "checkpoints").is_dir():
        weights = _final_checkpoint(path)
        if weights is None:
            raise RunBuildError(
                f"{_KEY}: run directory {path} has no final checkpoint; train it to the end first"
            )
        return InitSource("run", path, weights, _run_description(path))
    if (path / MANIFEST).is_file():
        manifest = _json(path / MANIFEST)
        base = manifest.get("base_model", {})
        name = (base.get("registry_name") or base.get("factory")) if isinstance(base, dict) else None
        weights = path / str(manifest.get("weights_file", "model.safetensors"))
        return InitSource("export", path, weights, f"exported model {path} (base model {name!r})")
    raise RunBuildError(
        f"{_KEY}: {path} is a directory but neither a run directory (no checkpoints/) nor an exported "
        f"model (no {MANIFEST}); give a run directory, an export, or a weights file"
    )


def init_weights_file(path: str | Path) -> Path | None:
    """The file ``model.init_from = path`` loads, or ``None`` when there is none (missing, unfinished run)."""
    try:
        return resolve_init_source(path).weights_file
    except RunBuildError:
        return None


def _tensor_dict(tree: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(tree, Mapping) and tree and all(isinstance(v, torch.Tensor) for v in tree.values()):
        return {str(k): v for k, v in tree.items()}
    raise RunBuildError(f"{_KEY}: {where} holds no state dict (a mapping of names to tensors)")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        tree = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise RunBuildError(
            f"{_KEY}: {path} cannot be read as a torch checkpoint of tensors and plain values ({err})"
        ) from None
    for key in ("model", "state_dict"):  # a slimtrain checkpoint; a Lightning-style one
        if isinstance(tree, Mapping) and isinstance(tree.get(key), Mapping):
            return _tensor_dict(tree[key], f"{path} [{key!r}]")
    return _tensor_dict(tree, str(path))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch
    from safetensors import SafetensorError

    try:
        return safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise RunBuildError(f"{_KEY}: {path} cannot be read as a safetensors file ({err})") from None


def _read_export(source: InitSource) -> dict[str, torch.Tensor]:
    from slimtrain.compress.exported_format import read_manifest

    manifest = read_manifest(source.path)
    if manifest["changes"]:
        changed = ", ".join(f"{c.get('name')!r} ({c.get('type')})" for c in manifest["changes"])
        raise RunBuildError(
            f"{_KEY}: {source.described_as} changes the architecture of its base model at {changed}; "
            "a thinned or factorized model cannot start a run of the base architecture. Start from the run "
            "it was exported from (its directory), or from an export that keeps the architecture "
            "(unstructured pruning without --csr, or level 0)"
        )
    expected = manifest["checksums"].get(manifest["weights_file"])
    if not source.weights_file.is_file() or sha256_file(source.weights_file) != expected:
        raise RunBuildError(
            f"{_KEY}: {source.weights_file} is missing or does not match the checksum in its manifest"
        )
    tensors = _read_safetensors(source.weights_file)
    for names in manifest.get("tied_tensors", []):  # a tied tensor is stored once, under its first name
        for name in names[1:]:
            tensors[name] = tensors[names[0]]
    return tensors


def read_init_state(source: InitSource) -> dict[str, torch.Tensor]:
    """The tensors of ``source`` by their names in the file (before :func:`map_keys`), on the CPU.

    Raises:
        RunBuildError: The file cannot be read, holds no state dict, or is an export of another
            architecture (naming its changed layers).
        CheckpointError: A run's final checkpoint fails its checksum.
        ExportFormatError: An export's manifest is malformed.
    """
    if source.kind == "safetensors":
        return _read_safetensors(source.weights_file)
    if source.kind == "checkpoint":
        return _read_checkpoint(source.weights_file)
    if source.kind == "export":
        return _read_export(source)
    loaded = CheckpointStore(source.path / "checkpoints").load_latest(final_only=True)
    assert loaded is not None  # resolve_init_source found the final checkpoint
    return _tensor_dict(loaded[0].get("model"), f"{source.weights_file} ['model']")


def map_keys(keys: list[str], model_keys: set[str]) -> dict[str, str]:
    """Map the names of a saved state dict onto a model's names: source name → model name.

    ``_orig_mod`` path segments are removed; then a ``module.`` or ``model.`` prefix is stripped (repeatedly)
    while every key carries it and no key of the model does.

    Raises:
        RunBuildError: Two source names map to the same model name.
    """
    mapped = {key: ".".join(p for p in key.split(".") if p != _COMPILE_SEGMENT) for key in keys}
    changed = True
    while changed and mapped:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(v.startswith(prefix) for v in mapped.values()) and not any(
                k.startswith(prefix) for k in model_keys
            ):
                mapped = {k: v[len(prefix) :] for k, v in mapped.items()}
                changed = True
    targets: dict[str, str] = {}
    for key, target in mapped.items():
        if target in targets:
            raise RunBuildError(f"{_KEY}: the keys {targets[target]!r} and {key!r} both map to {target!r}")
        targets[target] = key
    return mapped


def _below(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _listing(kind: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN]) + (f", and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
    return f"{kind} {shown}"


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in tensor.shape) + "]"


def _check(source: InitSource, state: dict[str, torch.Tensor], model: nn.Module, exclude: list[str]) -> None:
    """Refuse a state that does not fit ``model`` exactly outside ``exclude`` (see the module docstring)."""
    from slimtrain.compress.exported_format import tied_parameter_groups

    own = model.state_dict()
    present = set(state)
    # A tied tensor saved once (safetensors' save_model) counts for all its names.
    covered = {name for group in tied_parameter_groups(model) if present & set(group) for name in group}
    missing = sorted(k for k in own if k not in present | covered and not _below(k, exclude))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in present & own.keys() if state[k].shape != own[k].shape)
    if not (missing or unexpected or mismatched):
        return
    problems = [
        _listing(kind, items)
        for kind, items in (
            (
                "shapes differ for",
                [f"{k} (file {_shape(state[k])}, model {_shape(own[k])})" for k in mismatched],
            ),
            ("missing from the file:", missing),
            ("not in the model:", unexpected),
        )
        if items
    ]
    modules = sorted({k.rpartition(".")[0] for k in missing + mismatched} - {""})
    hint = (
        "; to keep a module at its fresh initialisation instead (e.g. the classifier when the class count "
        f"differs), list it in model.init_exclude, e.g. [{', '.join(modules[:_SHOWN])}]"
        if modules
        else ""
    )
    raise RunBuildError(
        f"{_KEY}: the weights of {source.described_as} do not fit the model: " + "; ".join(problems) + hint
    )


def load_init_weights(model: nn.Module, config: ModelConfig) -> None:
    """Load ``config.init_from`` into ``model`` in place (nothing when it is unset).

    Args:
        model: The freshly built model (before the method prepares it).
        config: The recipe's ``model`` section.

    Raises:
        RunBuildError: Naming the source and every problem: a missing path, an unreadable file, a thinned
            or factorized export, an ``init_exclude`` entry that names no module, or keys and shapes that
            do not match the model.
    """
    if config.init_from is None:
        return
    source = resolve_init_source(config.init_from)
    exclude = list(config.init_exclude or [])
    modules = {name for name, _ in model.named_modules()}
    unknown = [p for p in exclude if p not in modules]
    if unknown:
        top = sorted(name for name in modules if name and "." not in name)
        raise RunBuildError(
            f"'model.init_exclude': {', '.join(map(repr, unknown))} names no module of the model; "
            f"its top-level modules: {', '.join(top)}"
        )
    raw = read_init_state(source)
    own = model.state_dict()
    names = map_keys(list(raw), set(own))
    state = {names[k]: v for k, v in raw.items() if not _below(names[k], exclude)}
    _check(source, state, model, exclude)
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
