"""Optimizer-state transport rules and checkpoint round trips across rank changes (spec §2.7)."""

import io
import math

import pytest
import torch

from slimtrain.lowrank import TDLRT, factorized_layers, transport_state_tensor

from .test_integrator import batch, closure_for, tiny_model

F64 = torch.float64


def test_transport_rules_on_a_hand_checkable_case():
    """A 45° rotation plus one new direction: first moments rotate, second moments follow (√v ×R)∘²."""
    c = s = math.sqrt(0.5)
    rotation = torch.tensor([[c, -s], [s, c], [0.0, 0.0]], dtype=F64)  # 3 × 2: new third direction
    first = torch.tensor([[2.0], [0.0]], dtype=F64)
    second = torch.tensor([[4.0], [0.0]], dtype=F64)
    maps = {0: rotation}
    assert torch.allclose(
        transport_state_tensor("exp_avg", first, maps, (3, 1)), first.new_tensor([[2 * c], [2 * s], [0]])
    )
    assert torch.allclose(
        transport_state_tensor("exp_avg_sq", second, maps, (3, 1)), first.new_tensor([[2.0], [2.0], [0]])
    )
    assert torch.equal(
        transport_state_tensor("momentum_buffer", first, maps, (3, 1), "reset"), torch.zeros(3, 1, dtype=F64)
    )
    kept = transport_state_tensor("momentum_buffer", first, maps, (3, 1), "none")
    assert torch.equal(kept, first.new_tensor([[2.0], [0.0], [0.0]]))


@pytest.mark.parametrize(
    ("options", "steps_before_save"),
    [({"variant": "two_pass"}, 2), ({"variant": "parallel"}, 2), ({"variant": "local", "local_steps": 3}, 4)],
    ids=["two_pass", "parallel", "local"],
)
def test_checkpoint_mid_training_continues_identically(options, steps_before_save):
    """Save after ranks changed (for local S-iterations: inside a cycle, at augmented ranks), load into a
    model built at other ranks: the next steps, across a truncation, match bit for bit.
    """

    def adam(params):
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.01)

    model = tiny_model()
    integrator = TDLRT(model, adam, tau=0.5, **options)
    initial = integrator.ranks()
    for step in range(steps_before_save):
        integrator.step(closure_for(model, *batch(step)))
    if options["variant"] == "local":  # saved inside a cycle that opened from truncated ranks
        assert integrator.cycle_ranks is not None and integrator.cycle_ranks != initial
    else:
        assert integrator.ranks() != initial
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "integrator": integrator.state_dict()}, buffer)

    def continue_training(model, integrator):
        torch.manual_seed(7)
        for step in range(steps_before_save, steps_before_save + 2):
            integrator.step(closure_for(model, *batch(step)))
        return integrator.ranks(), {k: v.clone() for k, v in model.state_dict().items()}

    expected_ranks, expected_state = continue_training(model, integrator)

    restored = tiny_model(rank_fraction=0.3)
    restored_integrator = TDLRT(restored, adam, tau=0.5, **options)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    with pytest.raises(ValueError, match="load the model"):
        restored_integrator.load_state_dict(checkpoint["integrator"])
    restored.load_state_dict(checkpoint["model"])
    restored_integrator.load_state_dict(checkpoint["integrator"])
    ranks, state = continue_training(restored, restored_integrator)
    assert ranks == expected_ranks
    for key, value in expected_state.items():
        assert torch.equal(state[key], value), (key, float((state[key] - value).abs().max()))


def test_adam_state_is_core_shaped_after_every_step():
    """With AdamW and changing ranks, every core-shaped moment keeps the core's shape (no stale buffers)."""
    model = tiny_model()
    integrator = TDLRT(model, lambda p: torch.optim.AdamW(p, lr=0.01, amsgrad=True), tau=0.5)
    for step in range(2):
        integrator.step(closure_for(model, *batch(step)))
        for layer in factorized_layers(model).values():
            state = integrator.optimizer.state[layer.core]
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                assert state[key].shape == layer.core.shape
                assert bool(torch.isfinite(state[key]).all())
