"""On-disk format of exported models: ``model.safetensors`` + ``manifest.json`` in one directory.

The manifest records how to rebuild the architecture without pickled classes: the base model (a
``slimtrain.models`` registry name, or the import path ``"module:qualname"`` of a factory, with its keyword
arguments), and every layer that differs from the base (its key in :data:`slimtrain.layers.LAYER_TYPES`,
constructor arguments, kept channel indices where channels were removed; a re-shaped instance of a subclass of
a registered type is marked ``"reshape": true`` and keeps its class). It also lists every tensor (shape,
dtype), the groups of tied tensor names (stored once), the recipe, the input preprocessing when known,
free-form extra fields and the SHA-256 of the weights file. Loading rebuilds the base, applies the recorded
changes and loads the weights strictly; any mismatch is refused with :class:`ExportFormatError`.

Format versions: 2 (written now) records namespaced layer keys (``"slimtrain.TuckerConv2d"``); format-1
manifests, which recorded bare class names (``"TuckerConv2d"``), are read through
:data:`slimtrain.layers.specs.V1_TYPE_NAMES`. See docs/export.md.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from torch import nn

from slimtrain import __version__ as slimtrain_version
from slimtrain._materialized import refuse_unmaterialized
from slimtrain._wrappers import unwrap_model
from slimtrain.compress._modules import KEPT_CHANNELS_ATTR, get_submodule, set_submodule
from slimtrain.errors import ExportFormatError, FactoryImportError, UnknownNameError, UnsupportedModelError
from slimtrain.io import apply_umask_tree
from slimtrain.layers.specs import build_layer, layer_type_of, reshape_layer

if TYPE_CHECKING:  # the registry itself is imported only when a base is named, in _build_base
    from slimtrain.models.registry import ModelFactory

FORMAT_NAME = "slimtrain-exported"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
PREPROCESSING_ATTR = "slimtrain_preprocessing"
"""Attribute of a model returned by :func:`load_exported` holding the manifest's ``"preprocessing"``."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build_base(base: str | ModelFactory, kwargs: Mapping[str, Any]) -> nn.Module:
    from slimtrain.models.factory import build_model  # lazily: importing the zoo registers every model

    # A factory may return its model wrapped (torch.compile): the manifest names the model inside.
    return unwrap_model(build_model(base, kwargs))


def architecture_changes(base: nn.Module, model: nn.Module) -> list[dict[str, Any]]:
    """List the layers of ``model`` that differ from ``base`` (type key, arguments, kept channels).

    Containers of the same type are compared child by child. A differing layer must be an instance of a
    registered layer type (:data:`slimtrain.layers.LAYER_TYPES`, recognised through its class hierarchy); an
    instance of a *subclass* of one (a ``BatchNorm2d`` with a fused activation, say) may only change shape
    where the base holds the same class, and is recorded as a re-shape so that loading keeps its class.

    Raises:
        ExportFormatError: If a difference cannot be expressed by layer replacements and re-shapes.
    """
    changes: list[dict[str, Any]] = []

    def visit(prefix: str, b: nn.Module, m: nn.Module) -> None:
        missing = sorted(set(b._modules) - set(m._modules))
        if missing:
            raise ExportFormatError(
                f"module {prefix or '<model>'!r} lost children {missing} relative to the base model"
            )
        for child_name, child in m._modules.items():
            name = f"{prefix}.{child_name}" if prefix else child_name
            base_child = b._modules.get(child_name)
            if child is None:
                continue
            same_type = base_child is not None and type(base_child) is type(child)
            entry_type = layer_type_of(child)
            if entry_type is None:
                if not same_type:
                    raise ExportFormatError(
                        f"module {name!r} is a {type(child).__qualname__}, the base model has "
                        f"{type(base_child).__qualname__ if base_child is not None else 'nothing'} there, "
                        f"and {type(child).__qualname__} is not a registered layer type "
                        "(slimtrain.layers.register_layer_type)"
                    )
                visit(name, base_child, child)
                continue
            config = entry_type.config(child)
            if same_type and config == entry_type.config(base_child):
                if next(child.children(), None) is None or type(child) is entry_type.cls:
                    continue
                visit(name, base_child, child)
                continue
            entry: dict[str, Any] = {"name": name, "type": entry_type.key, "config": config}
            if type(child) is not entry_type.cls:
                if not same_type:
                    raise ExportFormatError(
                        f"module {name!r} is a {type(child).__qualname__}, a subclass of the registered "
                        f"{entry_type.key} with its own class, which an export can only re-shape where the "
                        "base model holds the same class"
                    )
                if next(child.children(), None) is not None:
                    raise ExportFormatError(
                        f"module {name!r} ({type(child).__qualname__}) changed, and a subclass with child "
                        "modules cannot be re-shaped; register its class (slimtrain.layers)"
                    )
                entry["reshape"] = True
            if hasattr(child, KEPT_CHANNELS_ATTR):
                entry["kept_channels"] = getattr(child, KEPT_CHANNELS_ATTR)
            changes.append(entry)

    visit("", base, model)
    return changes


def tied_parameter_groups(model: nn.Module) -> list[list[str]]:
    """Names of the parameters and buffers that are one tensor, grouped (each group of two or more)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def save_exported(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    base: str | ModelFactory,
    base_kwargs: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an exported (compressed) model as a directory ``path`` with weights and manifest.

    The directory is written under a temporary name next to ``path`` and renamed into place, with the modes
    a plain ``mkdir`` / ``open`` would give under the process umask (``0o755`` / ``0o644`` under ``022``).
    Replacing an
    existing export takes two renames (old → ``.<name>.old``, new → ``path``); a process killed between
    them leaves the previous export under ``.<name>.old``, which the next :func:`save_exported` or
    :func:`load_exported` of ``path`` puts back (:func:`finish_interrupted_save`). So ``path`` always
    reads as the previous export or the complete new one, never a partial one.

    Args:
        model: The exported model (channels removed / layers factorized / masks folded); a
            ``DistributedDataParallel`` or ``torch.compile`` wrapper is unwrapped.
        path: Directory to create.
        base: The uncompressed architecture: a ``slimtrain.models`` registry name, or a factory callable
            (recorded by its import path ``"module:qualname"``; :func:`load_exported` imports it again when
            it is importable, otherwise it must be passed to it). A model it returns inside a wrapper
            (``torch.compile``) is unwrapped, as ``model`` is.
        base_kwargs: Keyword arguments of the registry's ``create_model`` or of the factory.
        recipe: The recipe (configuration) that produced the model, JSON-serialisable.
        manifest_extra: Further JSON-serialisable fields (metrics, provenance) stored under ``"extra"``.
        preprocessing: How inputs must be prepared (normalization, input shape, dtype, classes),
            JSON-serialisable, stored under ``"preprocessing"``; default the model's
            :data:`PREPROCESSING_ATTR` attribute when it has one (a model from :func:`load_exported`), so
            re-saving a loaded model keeps it.
        overwrite: Replace an existing directory at ``path``.

    Returns:
        The directory path.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is false.
        ExportFormatError: If the architecture change cannot be recorded.
        UnsupportedModelError: If the recorded changes would not rebuild the model (``load`` would fail);
            nothing is written then.
    """
    path = Path(path)
    model = unwrap_model(model)  # stored under the base model's names, not its wrapper's
    refuse_unmaterialized(model, "save_exported")
    finish_interrupted_save(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    kwargs = dict(base_kwargs or {})
    if preprocessing is None:
        preprocessing = getattr(model, PREPROCESSING_ATTR, None)
    base_model = _build_base(base, kwargs)
    changes = architecture_changes(base_model, model)
    _refuse_unloadable(base_model, changes, model)  # replays the changes on the base model it only read
    tied = tied_parameter_groups(model)
    duplicates = {name for names in tied for name in names[1:]}
    # A tied tensor is stored once, under the first of its names.
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if k not in duplicates
    }
    listed = {k: v for k, v in model.state_dict().items()}
    base_entry: dict[str, Any] = {"kwargs": kwargs}
    if callable(base):
        base_entry["factory"] = (
            f"{getattr(base, '__module__', '?')}:{getattr(base, '__qualname__', repr(base))}"
        )
    else:
        base_entry["registry_name"] = base
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        safetensors.torch.save_file(state, str(tmp / WEIGHTS_FILE))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "base_model": base_entry,
            "changes": changes,
            "tensors": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                for k, v in listed.items()
            },
            "tied_tensors": tied,
            "weights_file": WEIGHTS_FILE,
            "checksums": {WEIGHTS_FILE: _sha256(tmp / WEIGHTS_FILE)},
            "recipe": dict(recipe) if recipe is not None else None,
            "extra": dict(manifest_extra or {}),
            "preprocessing": dict(preprocessing) if preprocessing is not None else None,
            "versions": {"torch": torch.__version__, "slimtrain": slimtrain_version},
        }
        with (tmp / MANIFEST_FILE).open("w") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        apply_umask_tree(tmp)  # mkdtemp made it owner-only
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def finish_interrupted_save(path: str | os.PathLike[str], *, remove_partial: bool = True) -> None:
    """Clean up after a :func:`save_exported` of ``path`` that was killed part-way.

    A previous export parked under ``.<name>.old`` is renamed back when ``path`` is missing (killed between
    the two renames of an overwrite) and deleted when ``path`` holds the new export (killed before the
    clean-up); with ``remove_partial``, half-written temporary directories ``.<name>.<random>`` are
    deleted too (:func:`load_exported` leaves them, since a save may be in progress). Two processes saving
    to the same ``path`` at once are not supported.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)
    if remove_partial and path.parent.is_dir():
        for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if leftover.is_dir() and leftover != old:
                shutil.rmtree(leftover, ignore_errors=True)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the manifest of an exported-model directory.

    Raises:
        ExportFormatError: If the manifest is missing, not JSON, or not of this format.
    """
    manifest_path = Path(path) / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError as error:
        raise ExportFormatError(f"{manifest_path} not found") from error
    except json.JSONDecodeError as error:
        raise ExportFormatError(f"{manifest_path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ExportFormatError(f"{manifest_path} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ExportFormatError(
            f"{manifest_path}: unsupported format_version {manifest.get('format_version')!r}"
        )
    for key in ("base_model", "changes", "tensors", "weights_file", "checksums"):
        if key not in manifest:
            raise ExportFormatError(f"{manifest_path} lacks the key {key!r}")
    return manifest


def load_exported(path: str | os.PathLike[str], *, factory: ModelFactory | None = None) -> nn.Module:
    """Rebuild an exported model from ``path`` (see :func:`save_exported`), in eval mode.

    Args:
        path: The exported-model directory.
        factory: The base model factory, required when the model was saved with a factory that cannot be
            imported here (built with the recorded keyword arguments, :func:`slimtrain.models.build_model`);
            overrides a registry name.

    Returns:
        The model with the recorded architecture and weights. Its attribute :data:`PREPROCESSING_ATTR`
        (``model.slimtrain_preprocessing``) holds the manifest's ``"preprocessing"`` (how to prepare inputs:
        normalization mean/std, input shape and dtype, classes; see docs/export.md), ``None`` when the export
        did not record it.

    Raises:
        ExportFormatError: On a missing file, checksum mismatch, a manifest naming missing or extra tensors,
            or shapes/dtypes that disagree with the weights file or the rebuilt architecture.
        FactoryImportError: The recorded factory cannot be imported here and ``factory`` is not given.
    """
    path = Path(path)
    finish_interrupted_save(path, remove_partial=False)
    manifest = read_manifest(path)
    weights = path / manifest["weights_file"]
    if not weights.is_file():
        raise ExportFormatError(f"weights file {weights} not found")
    expected = manifest["checksums"].get(manifest["weights_file"])
    actual = _sha256(weights)
    if expected != actual:
        raise ExportFormatError(
            f"checksum mismatch for {weights}: manifest has {expected}, file has {actual}"
        )
    model = _build_base(_base_of(path, manifest, factory), manifest["base_model"].get("kwargs", {}))
    _replay(model, manifest["changes"], str(path))
    tensors = safetensors.torch.load_file(str(weights))
    listed = manifest["tensors"]
    tied = manifest.get("tied_tensors", [])
    duplicates = {name: names[0] for names in tied for name in names[1:]}
    _check_keys(f"{weights} against {MANIFEST_FILE}", set(listed) - set(duplicates), set(tensors))
    _check_keys(f"the rebuilt model against {MANIFEST_FILE}", set(listed), set(model.state_dict()))
    for name, first in duplicates.items():
        tensors[name] = tensors[first]
    for name, spec in listed.items():
        tensor = tensors[name]
        if list(tensor.shape) != spec["shape"] or str(tensor.dtype).removeprefix("torch.") != spec["dtype"]:
            raise ExportFormatError(
                f"tensor {name!r}: manifest says {spec}, {weights.name} has "
                f"{list(tensor.shape)} {tensor.dtype}"
            )
        target = model.state_dict()[name]
        if target.shape != tensor.shape:
            raise ExportFormatError(
                f"tensor {name!r} has shape {list(tensor.shape)} but the rebuilt model expects "
                f"{list(target.shape)}"
            )
    model.load_state_dict(tensors, strict=True, assign=True)
    _tie(model, tied)
    setattr(model, PREPROCESSING_ATTR, manifest.get("preprocessing"))
    return model.eval()


def _replay(model: nn.Module, changes: list[dict[str, Any]], where: str) -> None:
    """Apply recorded architecture changes to the base model, in place."""
    for change in changes:
        try:
            if change.get("reshape"):
                module = get_submodule(model, change["name"])
                reshape_layer(module, change["type"], change["config"])
            else:
                module = build_layer(change["type"], change["config"])
                set_submodule(model, change["name"], module)
        except (KeyError, ValueError, AttributeError, UnknownNameError, UnsupportedModelError) as error:
            raise ExportFormatError(
                f"{where}: cannot apply the change to {change.get('name')!r}: {error}"
            ) from error
        if "kept_channels" in change:
            setattr(module, KEPT_CHANNELS_ATTR, change["kept_channels"])


def _refuse_unloadable(base: nn.Module, changes: list[dict[str, Any]], model: nn.Module) -> None:
    """Raise if the base model with ``changes`` replayed would not hold ``model``'s tensors (names, shapes).

    ``slimtrain.load`` rebuilds exactly this, so a model it could not load is never saved.
    """
    _replay(base, changes, "save_exported")
    rebuilt = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differing = sorted(k for k in rebuilt.keys() | saved.keys() if rebuilt.get(k) != saved.get(k))
    if differing:
        name = differing[0]
        raise UnsupportedModelError(
            f"save_exported cannot record the architecture of this model: tensor {name!r} would be rebuilt "
            f"as {rebuilt.get(name, 'absent')} but is {saved.get(name, 'absent')} "
            f"({len(differing)} tensor(s) differ): a change slimtrain cannot record and replay, such as "
            "channels removed inside a factorized layer (compress the dense layers first) or a tensor the "
            "model creates after it is built"
        )


def _base_of(path: Path, manifest: dict[str, Any], factory: ModelFactory | None) -> str | ModelFactory:
    """The registry name or factory to build the base model from (an importable factory is imported).

    Raises:
        FactoryImportError: The recorded factory cannot be imported here (naming its module).
        ExportFormatError: A format-1 manifest names a factory without its module.
    """
    from slimtrain.models.factory import resolve_factory

    entry = manifest["base_model"]
    if factory is not None:
        return factory
    if "registry_name" in entry:
        return entry["registry_name"]
    recorded = str(entry.get("factory", ""))
    if ":" in recorded:  # format 2 records an import path; format 1 only a dotted name
        try:
            return resolve_factory(recorded)
        except FactoryImportError as error:
            raise FactoryImportError(
                f"{path} was saved from a factory that cannot be imported here: {error}; install its "
                "package, or pass it as slimtrain.load(path, factory=...)"
            ) from error
    raise ExportFormatError(
        f"{path} was saved from the factory {entry.get('factory')!r}; "
        "pass it as slimtrain.load(path, factory=...)"
    )


def _tie(model: nn.Module, tied: list[list[str]]) -> None:
    """Make every name of each group refer to the first name's tensor again (loading assigned copies)."""
    for names in tied:
        first_owner, first_attr = _owner(model, names[0])
        shared = getattr(first_owner, first_attr)
        for name in names[1:]:
            owner, attr = _owner(model, name)
            if attr in owner._parameters:
                owner._parameters[attr] = shared
            else:
                owner._buffers[attr] = shared


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (get_submodule(model, module_name) if module_name else model), attr


def _check_keys(what: str, listed: set[str], present: set[str]) -> None:
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing or extra:
        raise ExportFormatError(f"tensor names disagree for {what}: missing {missing}, extra {extra}")
