"""Per-tensor SFW radii (``radii``) and the reference code's radius draw (``radius_draw="reference"``)."""

import copy
import math

import pytest
import torch
from torch import nn

from slimtrain.errors import BadInputError
from slimtrain.fw import ConstraintsConfig, build_constraints

TAU = 3.0


def _model() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, bias=False),
        nn.Flatten(),
        nn.Linear(16, 4),  # a bias of shape (4,), like the BatchNorm's
    )


def _radii(groups) -> dict[str, float]:
    return {name: c.radius for g in groups for name, c in zip(g["names"], g["constraint"], strict=True)}


def _transcribed_reference_norms(model: nn.Module, structured: bool) -> dict[str, float]:
    """compression-aware-SFW's ``get_model_init_norms`` (local mode), by parameter name instead of shape."""
    modules = [
        (name, module, kind)
        for name, module in model.named_modules()
        for kind in ("weight", "bias")
        if hasattr(module, kind) and getattr(module, kind) is not None
    ]
    if structured:  # set_structured_k_constraints: the Conv2d weights' sets first, then the rest
        convs = [m for m in modules if isinstance(m[1], nn.Conv2d) and m[2] == "weight"]
        modules = convs + [m for m in modules if m not in convs]
    norms = {}
    for name, module, kind in modules:
        output = 0
        for _ in range(5):
            module.reset_parameters()
            output += torch.norm(getattr(module, kind), p=2).item()
        average = float(output) / 5
        norms[f"{name}.{kind}"] = 1.0 if average == 0.0 else average
    return norms


@pytest.mark.parametrize("mode", ["unstructured", "filter"])
def test_reference_draw_reproduces_the_reference_procedure_from_the_same_rng_state(mode):
    """Given the same global RNG state, the reference draw yields the reference code's radii, leaves the
    live model at the same re-randomized weights and the global RNG in the same state.
    """
    reference_model, model = _model(), _model()
    torch.manual_seed(7)
    norms = _transcribed_reference_norms(reference_model, structured=mode == "filter")
    reference_rng = torch.get_rng_state()
    torch.manual_seed(7)
    groups = build_constraints(model, mode=mode, tau=TAU, n_draws=5, radius_draw="reference")
    assert torch.equal(torch.get_rng_state(), reference_rng)
    for (name, p), q in zip(model.state_dict().items(), reference_model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for name, radius in _radii(groups).items():
        assert radius == pytest.approx(TAU * norms[name], rel=1e-12), name


def test_seeded_draw_leaves_model_and_rng_alone():
    """The default draw runs on a copy in a forked RNG: weights and global RNG state are unchanged."""
    model = _model()
    before = copy.deepcopy(model.state_dict())
    state = torch.get_rng_state()
    build_constraints(model, tau=TAU, n_draws=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_per_tensor_radii_from_a_mapping_or_a_function():
    """Named tensors get exactly the given radius; the others keep the τ rule; a function may decline."""
    model = _model()
    default = _radii(build_constraints(model, tau=TAU, n_draws=3))
    given = {"0.weight": 0.5, "5.bias": 2.0}
    mapped = _radii(build_constraints(model, tau=TAU, n_draws=3, radii=given))
    assert {n: mapped[n] for n in given} == given
    assert all(mapped[n] == default[n] for n in default if n not in given)
    by_function = _radii(
        build_constraints(model, "filter", tau=TAU, radii=lambda n: 1.5 if n.endswith("weight") else None)
    )
    for name, radius in by_function.items():
        assert (radius == 1.5) == name.endswith("weight"), name


def test_unknown_or_invalid_radii_are_refused_by_name():
    """Names the model does not train are all named; radii need local mode and positive values."""
    model = _model()
    with pytest.raises(BadInputError, match=r"'3\.bias', 'nope'"):
        build_constraints(model, radii={"nope": 1.0, "0.weight": 1.0, "3.bias": 1.0})
    with pytest.raises(ValueError, match="radii"):
        ConstraintsConfig(radii={"0.weight": -1.0})
    with pytest.raises(ValueError, match="radii"):
        ConstraintsConfig(radii={"0.weight": 1.0}, global_mode=True)
    with pytest.raises(ValueError, match="radii"):
        build_constraints(model, radii=lambda n: math.inf)
