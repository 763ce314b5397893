"""Masks of the sparsity core: one :class:`MaskSet`, applied to a copy or in place (the name says which).

A mask dictionary maps a parameter name (as in ``model.named_parameters()``) to a boolean tensor of the same
shape, ``True`` where the entry is kept. Every method, baseline and post-training operator applies its masks
through :class:`MaskSet`: :func:`slimtrain.compress.apply_masks` is ``applied_to_copy``, SWD's final pruning
``apply_``, masked fine-tuning ``attach``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from slimtrain._wrappers import copy_model, unwrap_model
from slimtrain.errors import UnsupportedModelError
from slimtrain.layers.prunable import is_computed, make_plain

__all__ = ["MaskSet"]


class MaskSet:
    """Boolean keep masks for named tensors of one model: applied to a copy, in place, or after every step.

    Re-applying after every optimizer step keeps pruned entries at exactly zero even though momentum and
    weight decay would otherwise move them (the masked fine-tuning of Han et al. 2015 and of
    docs/swd.md#baselines).

    Args:
        model: The model whose parameters are masked (not modified here). For a model inside a wrapper
            (``DataParallel``, ``torch.compile``) a name may be the wrapped model's (as slimtrain's mask
            functions give them) or the wrapper's (``"module.…"``).
        masks: ``{name: keep mask}``; each mask has its tensor's shape (True = kept). A shared (tied)
            parameter may be named by any of its names, and its mask holds for all of them. A computed weight
            (a ``torch.nn.utils.parametrize`` parametrization such as ``weight_norm``, or a
            ``torch.nn.utils.prune`` mask) is named ``"<module>.<name>"``: applying the masks first makes it
            a plain parameter holding its current value (the parametrization removed), which is then masked,
            so the model computes exactly the masked effective weight (docs/metrics.md#populations).

    Raises:
        KeyError: If a name is neither a parameter nor a computed weight of ``model``.
        ValueError: If a mask's shape differs from its tensor's.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor]) -> None:
        self._model = model
        inner = unwrap_model(model)
        params = {
            **dict(model.named_parameters(remove_duplicate=False)),
            **dict(inner.named_parameters(remove_duplicate=False)),
        }
        self._masks: dict[str, Tensor] = {}
        # Resolved once: the hook of attach() re-applies the masks after every optimizer step.
        self._params: dict[str, nn.Parameter] = {}
        self._computed_in: dict[str, nn.Module] = {}  # the model a computed weight's name belongs to
        for name, mask in masks.items():
            tensor = params.get(name)
            if tensor is None:
                for root in (inner, model):
                    tensor = _computed(root, name)
                    if tensor is not None:
                        self._computed_in[name] = root
                        break
                else:
                    raise KeyError(f"mask given for {name!r}, which is not a parameter of the model")
            else:
                self._params[name] = tensor
            if tuple(mask.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(tensor.shape)}"
                )
            self._masks[name] = mask.to(device=tensor.device, dtype=torch.bool)

    @property
    def masks(self) -> dict[str, Tensor]:
        """The keep masks by name."""
        return dict(self._masks)

    def apply_(self) -> None:
        """Zero every masked-out entry of the model, in place.

        A computed weight is first made a plain parameter of the model (in place): build the optimizer that
        should update it after this call.
        """
        if len(self._params) < len(self._masks):
            for name in self._masks.keys() - self._params.keys():
                module_name, _, local = name.rpartition(".")
                module = self._computed_in[name].get_submodule(module_name)
                # Under no_grad, removing a parametrization would leave a plain tensor, not a parameter.
                with torch.enable_grad():
                    make_plain(module, local)
                self._params[name] = getattr(module, local)
        with torch.no_grad():
            for name, p in self._params.items():
                p.mul_(self._masks[name])

    def applied_to_copy(self) -> nn.Module:
        """A copy of the model with every masked-out entry zeroed; the model itself is not modified.

        The masks are folded into the copy's weights: no hook or re-parametrization is left behind for the
        masked tensors.
        """
        result = copy_model(self._model, "applying masks to a copy")
        MaskSet(result, self._masks).apply_()
        return result

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Re-apply the masks in place after every ``optimizer.step()``.

        Args:
            optimizer: The optimizer that updates the masked parameters.

        Returns:
            A handle whose ``remove()`` stops the re-application.

        Raises:
            UnsupportedModelError: A masked weight is computed (``weight_norm``): making it plain at the first
                step would replace the parameter the optimizer holds. Call :meth:`apply_` first, then build
                the optimizer.
        """
        computed = sorted(self._masks.keys() - self._params.keys())
        if computed:
            raise UnsupportedModelError(
                f"MaskSet.attach: {', '.join(map(repr, computed))} are computed weights; call apply_() first "
                "(it makes them plain parameters), then build the optimizer and attach"
            )
        return optimizer.register_step_post_hook(lambda *_: self.apply_())

    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masks."""
        total = sum(mask.numel() for mask in self._masks.values())
        removed = sum(int((~mask).sum()) for mask in self._masks.values())
        return removed / total if total else 0.0


def _computed(model: nn.Module, name: str) -> Tensor | None:
    """The computed tensor ``"<module>.<local>"`` of ``model``, or None if there is none by that name."""
    module_name, _, local = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    value = getattr(module, local, None)
    # A buffer or a plain attribute is no weight: only a parametrized or pruning-hook tensor is computed.
    if not isinstance(value, Tensor) or local in module._buffers or not is_computed(module, local):
        return None
    return value
