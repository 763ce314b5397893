"""Properties every registered model must have, on every input configuration it supports."""

import inspect

import pytest
import torch

from slimtrain.models import create_model, list_models, registry

# (in_channels, image_size)
CONFIGS = [(1, 8), (1, 28), (3, 32)]
# Narrow variants keep the loop fast on CPU; the default sizes are covered by the family tests.
FAST_OPTIONS = {
    **{f"resnet{depth}": {"width": 4} for depth in (8, 18, 20, 32, 44, 56, 110)},
    "vgg16_bn": {"width_multiplier": 0.125},
    "wrn28": {"widen_factor": 1},
    "vit_tiny": {"dim": 24, "depth": 2, "heads": 2},
}
UNSUPPORTED = {("lenet5_caffe", 8)}

CASES = [
    pytest.param(name, channels, size, id=f"{name}-{channels}x{size}x{size}")
    for name in list_models()
    for channels, size in CONFIGS
    if (name, size) not in UNSUPPORTED
]


def build(name, channels, size, seed=0):
    torch.manual_seed(seed)
    return create_model(
        name, num_classes=7, in_channels=channels, image_size=size, **FAST_OPTIONS.get(name, {})
    )


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_forward_backward(name, channels, size):
    """Logits have shape (batch, num_classes); every parameter gets a finite, non-None gradient."""
    model = build(name, channels, size)
    x = torch.randn(3, channels, size, size)
    logits = model(x)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", list_models())
def test_seed_determinism(name):
    """The same seed gives identical weights and outputs; another seed gives different weights."""
    channels, size = 1, 28
    first, second, other = (
        build(name, channels, size, 3),
        build(name, channels, size, 3),
        build(name, channels, size, 4),
    )
    state, state_other = first.state_dict(), other.state_dict()
    for key, value in second.state_dict().items():
        assert torch.equal(state[key], value), key
    assert any(not torch.equal(state[k], state_other[k]) for k in state if state[k].is_floating_point())
    x = torch.randn(2, channels, size, size)
    first.eval(), second.eval()
    assert torch.equal(first(x), second(x))


@pytest.mark.parametrize("name", list_models())
def test_last_layer_is_classifier(name):
    """Every model's last layer is the nn.Linear attribute `classifier` with num_classes outputs."""
    model = build(name, 1, 28)
    assert isinstance(model.classifier, torch.nn.Linear)
    assert model.classifier.out_features == 7
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last_linear is model.classifier


def test_unsupported_configuration_gives_clear_error():
    """lenet5_caffe refuses 8×8 inputs with the smallest valid image size in the message."""
    with pytest.raises(
        ValueError, match=r"lenet5_caffe.*image_size=8 is too small.*smallest valid image_size is 16"
    ):
        create_model("lenet5_caffe", in_channels=1, image_size=8)


def _options(name):
    """The factory's declared options (keyword parameters after the common arguments) with their defaults."""
    parameters = list(inspect.signature(registry.MODELS.get(name)).parameters.values())
    assert [p.name for p in parameters[:3]] == ["num_classes", "in_channels", "image_size"]
    return {p.name: p.default for p in parameters[3:] if p.kind is not p.VAR_KEYWORD}, any(
        p.kind is p.VAR_KEYWORD for p in parameters
    )


@pytest.mark.parametrize("name", list_models())
def test_registered_options_are_the_factorys(name):
    """The options register_model derives from the factory are honoured: each, passed explicitly with its
    default, builds the same model as leaving it out; an undeclared option is refused, naming the valid ones.
    """
    declared, open_ended = _options(name)
    assert all(default is not inspect.Parameter.empty for default in declared.values()), declared
    fast = FAST_OPTIONS.get(name, {})
    torch.manual_seed(1)
    implicit = create_model(name, num_classes=5, in_channels=2, image_size=28, **fast)
    torch.manual_seed(1)
    explicit = create_model(name, num_classes=5, in_channels=2, image_size=28, **{**declared, **fast})
    state = implicit.state_dict()
    assert list(state) == list(explicit.state_dict())
    for key, value in explicit.state_dict().items():
        assert torch.equal(state[key], value), key
    assert implicit(torch.randn(2, 2, 28, 28)).shape == (2, 5)
    if not open_ended:
        with pytest.raises(
            ValueError, match=rf"'no_such_option' for model '{name}'; valid options: "
        ) as info:
            create_model(name, no_such_option=1)
        assert all(option in str(info.value) for option in declared)
