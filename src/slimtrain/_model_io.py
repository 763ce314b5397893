"""Calling a model as its users call it, and comparing its outputs (docs/export.md#model-inputs-and-outputs).

Example inputs are one tensor (``model(x)``), a tuple or list (positional: ``model(*inputs)``) or a mapping
(keyword: ``model(**inputs)``, e.g. ``input_ids`` and ``attention_mask`` of a Hugging Face model). Outputs
are compared as pytrees: tensors, tuples, lists, mappings (a Hugging Face ``ModelOutput`` is one) and
dataclasses, flattened in the order ``torch.utils._pytree`` uses, leaf by leaf. A comparison that finds no
tensor to compare raises instead of passing.

This module sits below every package that runs models (metrics, compress, train); it imports only torch and
the errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from slimtrain.errors import BadInputError, ExportMismatchError, UnsupportedModelError, WorkFailedError

ModelInputs = Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]
"""One tensor, the positional inputs of ``model(*inputs)`` or the keyword inputs of ``model(**inputs)``."""


@contextlib.contextmanager
def kept_training_modes(model: nn.Module) -> Iterator[None]:
    """Restore every sub-module's own training flag on leaving the block.

    ``model.train(was_training)`` would set every sub-module alike, unfreezing a BatchNorm the user had put
    in eval mode inside a training model.
    """
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, every sub-module's training flag restored after."""
    with kept_training_modes(model):
        model.eval()
        yield model


def split_inputs(inputs: ModelInputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments ``inputs`` stands for."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def call_model(model: nn.Module, inputs: ModelInputs) -> Any:
    """Call ``model`` with ``inputs`` as a tensor, positional tuple or keyword mapping."""
    args, kwargs = split_inputs(inputs)
    return model(*args, **kwargs)


def logits_of(output: Any) -> Tensor:
    """The logits of a model's output: a tensor as it is, or the ``"logits"`` of a mapping.

    A Hugging Face ``ModelOutput`` is such a mapping; so a model from ``transformers`` trains and evaluates
    without a wrapper.

    Raises:
        UnsupportedModelError: If ``output`` is neither, naming its type.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    raise UnsupportedModelError(
        f"the model returned {_describe(output)}, not logits: a classifier must return a tensor of logits "
        "(N, num_classes) or a mapping with a 'logits' tensor (a Hugging Face ModelOutput); wrap it in a "
        "module whose forward returns its logits"
    )


def input_tensors(inputs: ModelInputs) -> list[Tensor]:
    """The tensors of ``inputs``, positional ones first, keywords in their order (the exporter's order)."""
    args, kwargs = split_inputs(inputs)
    return [t for _, t in flatten_tensors((args, kwargs))]


def batch_size(inputs: ModelInputs) -> int:
    """The first dimension of the first input tensor.

    Raises:
        BadInputError: If ``inputs`` holds no tensor with a batch dimension.
    """
    tensors = input_tensors(inputs)
    if not tensors or tensors[0].dim() == 0:
        raise BadInputError(
            "example inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs whose "
            f"first tensor has a batch dimension; got {_describe(inputs)}"
        )
    return tensors[0].shape[0]


def map_tensors(fn: Callable[[Tensor], Tensor], inputs: Any) -> Any:
    """``inputs`` with ``fn`` applied to every tensor; tuples, lists and mappings are rebuilt alike."""
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        mapped = {k: map_tensors(fn, v) for k, v in inputs.items()}
        return mapped if type(inputs) is dict else _rebuild(inputs, mapped)
    if isinstance(inputs, (tuple, list)):
        items = [map_tensors(fn, v) for v in inputs]
        return type(inputs)(*items) if hasattr(inputs, "_fields") else type(inputs)(items)
    return inputs


def move_inputs(
    inputs: Any,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    non_blocking: bool = False,
) -> Any:
    """``inputs`` with every tensor moved to ``device`` and only the floating ones cast to ``dtype``.

    Integer and boolean tensors (token ids, attention masks, indices) keep their dtype.
    """

    def move(tensor: Tensor) -> Tensor:
        cast = dtype if tensor.is_floating_point() else None
        return tensor.to(device=device, dtype=cast, non_blocking=non_blocking)

    return map_tensors(move, inputs)


def _rebuild(mapping: Mapping[str, Any], items: dict[str, Any]) -> Mapping[str, Any]:
    try:
        return type(mapping)(items)
    except TypeError:  # a mapping type that cannot be built from a dict: a plain dict calls the model alike
        return items


def flatten_tensors(output: Any, path: str = "") -> list[tuple[str, Tensor]]:
    """The tensors of a pytree with their paths (``logits``, ``[0]``, ``hidden_states[1]``), in pytree order.

    Containers are tuples, lists, mappings (in their own order: a Hugging Face ``ModelOutput`` is an ordered
    mapping) and dataclass instances (in field order); other leaves (None, numbers, strings) hold no tensor.
    """
    if isinstance(output, Tensor):
        return [(path or "output", output)]
    if isinstance(output, Mapping):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in output.items()]
    elif isinstance(output, (tuple, list)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(output)]
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [
            (f"{path}.{f.name}" if path else f.name, getattr(output, f.name))
            for f in dataclasses.fields(output)
        ]
    else:
        return []
    return [leaf for name, value in items for leaf in flatten_tensors(value, name)]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close two outputs must be: ``|a - e| <= atol·max(1, max|e|) + rtol·|e|`` elementwise.

    Attributes:
        rtol: Relative tolerance.
        atol: Absolute tolerance, scaled by max(1, the largest magnitude of the reference leaf).
    """

    rtol: float = 1e-4
    atol: float = 1e-5


def compare_outputs(
    expected: Any,
    actual: Any,
    tolerance: Tolerance = Tolerance(),
    *,
    error: type[WorkFailedError] = ExportMismatchError,
) -> float:
    """Compare two model outputs leaf by leaf; return the largest absolute difference over all tensors.

    Args:
        expected: The reference output (a tensor or a pytree of them).
        actual: The output checked against it.
        tolerance: The allowed difference.
        error: The error raised on a difference (its message names the output leaf).

    Returns:
        The largest absolute difference of any compared element (0.0 for empty tensors).

    Raises:
        UnsupportedModelError: If ``expected`` holds no tensor: nothing could be compared.
        WorkFailedError: ``error``, if the structures, a shape or a value differ.
    """
    reference, checked = flatten_tensors(expected), flatten_tensors(actual)
    if not reference:
        raise UnsupportedModelError(
            f"the model returned {_describe(expected)}, which holds no tensor, so its outputs cannot be "
            "compared; call it with inputs on which it returns tensors (a tensor, or a tuple, list, dict, "
            "dataclass or Hugging Face ModelOutput of tensors)"
        )
    if [name for name, _ in reference] != [name for name, _ in checked]:
        raise error(
            f"outputs differ in structure: expected tensors {[n for n, _ in reference]}, "
            f"got {[n for n, _ in checked]}"
        )
    largest = 0.0
    for (name, e), (_, a) in zip(reference, checked, strict=True):
        largest = max(largest, _compare_leaf(name, e, a, tolerance, error))
    return largest


def _compare_leaf(
    name: str, expected: Tensor, actual: Tensor, tolerance: Tolerance, error: type[WorkFailedError]
) -> float:
    if expected.shape != actual.shape:
        raise error(f"output {name!r} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if not expected.numel():
        return 0.0
    actual = actual.to(expected.device)
    if not (expected.is_floating_point() or expected.is_complex()):
        if not torch.equal(expected, actual.to(expected.dtype)):
            raise error(f"output {name!r} differs (integer values are compared exactly)")
        return 0.0
    wide = torch.complex128 if expected.is_complex() else torch.float64  # fp16/bf16 errors measured exactly
    e, a = expected.to(wide), actual.to(wide)
    largest = float((e - a).abs().max())
    atol = tolerance.atol * max(1.0, float(e.abs().max()))
    if not torch.allclose(a, e, rtol=tolerance.rtol, atol=atol, equal_nan=True):
        raise error(
            f"output {name!r} differs: max abs error {largest:.3g} "
            f"(tolerance rtol={tolerance.rtol}, atol={atol:.3g})"
        )
    return largest


def _describe(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)[:60]
    return f"a {type(value).__name__}"
