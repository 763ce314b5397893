"""Where the cycles of augmented BUG with local S-iterations start (``cycle_phase``)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.lowrank import TDLRT, TDLRTConfig, convert_to_lowrank

F64 = torch.float64


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 10), nn.Tanh(), nn.Linear(10, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    convert_to_lowrank(model, init="from_weights")
    return model


def _events(phase: str, batch_indices: list[int], local_steps: int = 3) -> list[str]:
    """Per batch: ``"augment"`` (no step), ``"step"``, or ``"step+truncate"``, read off the integrator."""
    model = _model()
    sgd = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    integrator = TDLRT(model, sgd, tau=0.05, variant="local", local_steps=local_steps, cycle_phase=phase)
    truncations = []
    original = integrator._truncate

    def counting(*args):
        truncations.append(1)
        return original(*args)

    integrator._truncate = counting
    events = []
    for index in batch_indices:
        gen = torch.Generator().manual_seed(index)
        x, y = torch.randn(16, 8, generator=gen, dtype=F64), torch.randint(0, 3, (16,), generator=gen)
        bias = model[4].bias.detach().clone()
        before = len(truncations)

        def closure(x=x, y=y):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        integrator.step(closure, batch_index=index)
        stepped = not torch.equal(model[4].bias, bias)
        truncated = len(truncations) > before
        events.append(("step" if stepped else "augment") + ("+truncate" if truncated else ""))
    return events


def test_epoch_offset_follows_the_robustdlrt_trainer():
    """Augment at batch index ≡ 1, step every other batch and truncate after the step at ≡ 0 (mod N), batch 0
    of every epoch included (a cycle open at the epoch's end is truncated there).
    """
    two_epochs = [0, 1, 2, 3, 4, 0, 1, 2]
    assert _events("epoch_offset", two_epochs) == [
        "step+truncate",
        "augment",
        "step",
        "step+truncate",
        "augment",
        "step+truncate",
        "augment",
        "step",
    ]


def test_epoch_phase_restarts_cycles_at_each_epoch_and_global_does_not():
    """``epoch`` opens a cycle at batch 0 of each epoch (closing one left open); ``global`` counts steps."""
    two_epochs = [0, 1, 2, 3, 4, 0, 1, 2]
    assert _events("epoch", two_epochs) == [
        "augment",
        "step",
        "step+truncate",
        "augment",
        "step",
        "augment+truncate",  # the open cycle is truncated before the new epoch's augmentation
        "step",
        "step+truncate",
    ]
    assert _events("global", two_epochs) == ["augment", "step", "step+truncate"] * 2 + ["augment", "step"]


def test_epoch_phases_need_the_local_variant_and_a_batch_index():
    """A phase is an option of the local variant; an epoch phase without batch index is refused."""
    with pytest.raises(ValueError, match="cycle_phase"):
        TDLRTConfig(cycle_phase="epoch")
    integrator = TDLRT(_model(), lambda p: torch.optim.SGD(p, lr=0.1), variant="local", cycle_phase="epoch")
    with pytest.raises(ValueError, match="batch_index"):
        integrator.step(lambda: torch.zeros(()))
