"""Masks held on a model's parameters and re-applied after every optimizer step (masked fine-tuning)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["MaskSet"]


class MaskSet:
    """Boolean keep masks for named parameters of one model, applied in place on demand or after each step.

    Re-applying after every optimizer step keeps pruned entries at exactly zero even though momentum and
    weight decay would otherwise move them (the masked fine-tuning of Han et al. 2015 and of
    docs/swd.md#baselines).

    Args:
        model: The model whose parameters are masked.
        masks: ``{parameter name: keep mask}``; each mask has the parameter's shape (True = kept).

    Raises:
        KeyError: If a name is not a parameter of ``model``.
        ValueError: If a mask's shape differs from its parameter's.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor]) -> None:
        params = dict(model.named_parameters())
        self._pairs: list[tuple[str, nn.Parameter, Tensor]] = []
        for name, mask in masks.items():
            if name not in params:
                raise KeyError(f"mask given for {name!r}, which is not a parameter of the model")
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(p.shape)}"
                )
            self._pairs.append((name, p, mask.to(device=p.device, dtype=torch.bool)))

    @property
    def masks(self) -> dict[str, Tensor]:
        """The keep masks by parameter name."""
        return {name: mask for name, _, mask in self._pairs}

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero every masked-out entry in place."""
        for _, p, mask in self._pairs:
            p.mul_(mask)

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Re-apply the masks after every ``optimizer.step()``.

        Args:
            optimizer: The optimizer that updates the masked parameters.

        Returns:
            A handle whose ``remove()`` stops the re-application.
        """
        return optimizer.register_step_post_hook(lambda *_: self.apply_())

    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masked parameters."""
        total = sum(mask.numel() for _, _, mask in self._pairs)
        removed = sum(int((~mask).sum()) for _, _, mask in self._pairs)
        return removed / total if total else 0.0
