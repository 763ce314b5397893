import pytest
from torch import nn

from slimtrain.models import create_model, list_models, register_model, registry

EXPECTED = {
    "mlp",
    "lenet300_100",
    "lenet5",
    "lenet5_caffe",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "vgg16_bn",
    "wrn28",
    "vit_tiny",
}


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so registrations made by a test do not leak into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_list_models_is_sorted_and_complete():
    """list_models() returns every model of the zoo, sorted."""
    names = list_models()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


def test_unknown_model_lists_valid_names():
    """An unknown name raises ValueError naming it and listing every valid name."""
    with pytest.raises(ValueError, match="unknown model 'resnet21'") as info:
        create_model("resnet21")
    for name in list_models():
        assert name in str(info.value)


def test_unknown_option_names_it_and_valid_options():
    """An unknown keyword raises ValueError naming it and the model's valid options."""
    with pytest.raises(ValueError, match="'depth'") as info:
        create_model("resnet20", depth=18)
    for option in ("width", "shortcut", "bn_after_add"):
        assert option in str(info.value)


@pytest.mark.parametrize("argument", ["num_classes", "in_channels", "image_size"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True])
def test_common_arguments_must_be_positive_ints(argument, value):
    """num_classes, in_channels and image_size reject non-positive, float and bool values by name."""
    with pytest.raises(ValueError, match=argument):
        create_model("mlp", **{argument: value})


def test_factory_errors_name_the_model():
    """A configuration the factory rejects gives a ValueError that starts with the model's name."""
    with pytest.raises(ValueError, match=r"^model 'resnet20': shortcut must be 'A' or 'B'"):
        create_model("resnet20", shortcut="C")


def test_register_and_create_custom_model(scratch_registry):
    """A registered factory receives the common arguments and its options, and its options are validated."""
    seen = {}

    @register_model("toy")
    def toy(num_classes, in_channels, image_size, *, hidden=4):
        seen.update(num_classes=num_classes, in_channels=in_channels, image_size=image_size, hidden=hidden)
        return nn.Linear(in_channels * image_size**2, num_classes)

    model = create_model("toy", num_classes=3, in_channels=2, image_size=5, hidden=7)
    assert isinstance(model, nn.Linear)
    assert seen == {"num_classes": 3, "in_channels": 2, "image_size": 5, "hidden": 7}
    assert "toy" in list_models()
    with pytest.raises(ValueError, match=r"'width'.*valid options: hidden"):
        create_model("toy", width=2)


def test_open_ended_factory_accepts_any_option(scratch_registry):
    """A factory with **kwargs receives options the registry cannot enumerate."""

    @register_model("open")
    def open_model(num_classes, in_channels, image_size, **options):
        return nn.Linear(options["features"], num_classes)

    assert create_model("open", features=6).in_features == 6


def test_duplicate_registration_is_rejected(scratch_registry):
    """Registering an existing name raises and keeps the original factory."""
    original = registry._REGISTRY["mlp"]
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(lambda num_classes, in_channels, image_size: nn.Identity())
    assert registry._REGISTRY["mlp"] is original


def test_factory_signature_is_checked(scratch_registry):
    """A factory not starting with (num_classes, in_channels, image_size) is rejected at registration."""
    with pytest.raises(ValueError, match="must start with the parameters"):
        register_model("bad")(lambda classes, channels, size: nn.Identity())
    assert "bad" not in list_models()
