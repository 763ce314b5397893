"""Mixed precision of a training run: autocast for the forward passes, loss scaling for float16.

``train.precision`` of a recipe: ``fp32`` (default, nothing changes), ``bf16`` (forward passes under
``torch.autocast`` in bfloat16; no scaling is needed, bfloat16 has float32's range) or ``fp16`` (autocast in
float16 and a ``torch.amp.GradScaler``: the loss is scaled before ``backward`` and the gradients are unscaled
before anything reads them; a step whose gradients overflowed is skipped and the scale lowered). The
parameters, the optimizer state and every factorization (QR, SVD, eigh) stay in float32: only the forward
pass runs in low precision. See docs/training.md, "Precision and compilation".
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from slimtrain.errors import RecipeError

__all__ = ["AUTOCAST_DTYPES", "MixedPrecision", "PrecisionName"]

PrecisionName = Literal["fp32", "bf16", "fp16"]
#: The autocast dtype of each low precision.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast and (for ``fp16``) loss scaling of one run; ``MixedPrecision()`` is plain float32.

    Methods use it through :class:`~slimtrain.train.method.StepContext`: forward passes inside
    :meth:`autocast`, ``backward`` of :meth:`scale`'s result, :meth:`unscale_` before reading gradients,
    :meth:`step` instead of ``optimizer.step()``. The trainer calls :meth:`update` once after each step.

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: The device the model trains on (its type selects the autocast and scaler backend).

    Raises:
        ValueError: An unknown precision.
    """

    def __init__(self, precision: PrecisionName = "fp32", device: torch.device | str = "cpu") -> None:
        if precision not in ("fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.name = precision
        self.device_type = torch.device(device).type
        self.dtype = AUTOCAST_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None
        self._unscaled: set[int] = set()  # optimizers unscaled since the last update
        self._scaled = False  # a scaled loss was backpropagated since the last update

    @property
    def scaling(self) -> bool:
        """Whether gradients are scaled (``fp16``) until :meth:`unscale_`."""
        return self.scaler is not None

    def autocast(self) -> torch.autocast:
        """The autocast context of the forward passes (disabled for ``fp32``)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def scale(self, loss: Tensor) -> Tensor:
        """The loss to call ``backward`` on: scaled for ``fp16``, as is otherwise."""
        if self.scaler is None:
            return loss
        self._scaled = True
        return self.scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by the scale (fp16 only; once per step)."""
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; for ``fp16`` on unscaled gradients, skipped if any of them is not finite.

        The skip decision of ``fp16`` reads one flag on the host (``GradScaler.step``): the one host
        synchronisation of a low-precision step.
        """
        if self.scaler is None:
            optimizer.step()
            return
        self.unscale_(optimizer)
        self.scaler.step(optimizer)

    def update(self, method: str = "the method") -> None:
        """Adjust the scale after a step (fp16): lower it after an overflow, raise it after a long calm.

        Args:
            method: The method's name, for the error below.

        Raises:
            RecipeError: A scaled loss was backpropagated but no optimizer was unscaled or stepped through
                :meth:`unscale_` / :meth:`step`: the method stepped on gradients 65536 times too large (a
                method written before ``train.precision`` existed), so ``fp16`` is refused for it.
        """
        scaled, self._scaled = self._scaled, False
        if self.scaler is not None and scaled and not self._unscaled:
            raise RecipeError(
                f"'train.precision': {method} does not support fp16: it steps its optimizer without "
                "ctx.step_optimizer (or ctx.unscale_), so its gradients would stay scaled; use fp32 or bf16"
            )
        if self.scaler is not None and self._unscaled:
            self.scaler.update()
        self._unscaled.clear()

    def state_dict(self) -> dict[str, object]:
        """The scaler's state (scale, growth tracker), for bitwise resumption; empty unless fp16."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
