from importlib import metadata

import pytest
from torch import nn

from slimtrain.errors import UnknownNameError
from slimtrain.models import create_model, list_models, register_model, registry

EXPECTED = {
    "mlp",
    "lenet300_100",
    "lenet5",
    "lenet5_caffe",
    "resnet8",
    "resnet18",
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
def scratch_registry():
    """Registrations made by a test are undone afterwards, so they do not leak into other tests."""
    with registry.MODELS.scratch():
        yield


def test_list_models_is_sorted_and_complete():
    """list_models() returns every model of the zoo, sorted."""
    names = list_models()
    assert names == sorted(names)
    assert EXPECTED <= set(names)


def test_unknown_model_lists_valid_names():
    """An unknown name raises UnknownNameError (a ValueError and KeyError) naming it and every valid name."""
    with pytest.raises(UnknownNameError, match="unknown model 'resnet21'") as info:
        create_model("resnet21")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    assert str(info.value) == f"unknown model 'resnet21'; registered: {', '.join(list_models())}"


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
    """Registering another factory under a taken name raises and keeps the original; replace=True swaps it."""
    original = registry.MODELS.get("mlp")
    assert register_model("mlp")(original) is original  # the same factory again (a re-import) is fine

    def other(num_classes, in_channels, image_size):
        return nn.Identity()

    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(other)
    assert registry.MODELS.get("mlp") is original
    register_model("mlp", replace=True)(other)
    assert isinstance(create_model("mlp"), nn.Identity)


def test_installed_package_adds_a_model_through_entry_points(scratch_registry, monkeypatch):
    """A factory named by an entry point of group slimtrain.models is created by name, signature checked."""

    def plugin_net(num_classes, in_channels, image_size, *, hidden=3):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))

    class EntryPoint:
        def __init__(self, name, factory):
            self.name, self.factory = name, factory

        def load(self):
            return self.factory

    points = [EntryPoint("plugin_net", plugin_net), EntryPoint("plugin_bad", lambda n, c, s: nn.Identity())]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "slimtrain.models" else [])
    monkeypatch.setattr(registry.MODELS, "_entry_points_loaded", False)
    assert {"plugin_net", "plugin_bad"} <= set(list_models())
    assert create_model("plugin_net", num_classes=4, in_channels=1, image_size=3)[1].out_features == 4
    with pytest.raises(ValueError, match="must start with the parameters"):
        create_model("plugin_bad")


def test_factory_signature_is_checked(scratch_registry):
    """A factory not starting with (num_classes, in_channels, image_size) is rejected at registration."""
    with pytest.raises(ValueError, match="must start with the parameters"):
        register_model("bad")(lambda classes, channels, size: nn.Identity())
    assert "bad" not in list_models()


@pytest.mark.parametrize(
    ("name", "options", "culprit"),
    [
        ("mlp", {"widths": 5}, "widths"),
        ("mlp", {"widths": "300"}, "widths"),
        ("mlp", {"widths": [3, 0]}, r"widths\[1\]"),
        ("mlp", {"bias": "no"}, "bias"),
        ("lenet5", {"padding": 5}, "padding"),
        ("lenet5", {"padding": [1, -1]}, r"padding\[1\]"),
        ("resnet20", {"bn_after_add": 1}, "bn_after_add"),
        ("resnet20", {"width": None}, "width"),
        ("vgg16_bn", {"width_multiplier": "2"}, "width_multiplier"),
        ("wrn28", {"dropout": "x"}, "dropout"),
        ("vit_tiny", {"patch_size": 2.5}, "patch_size"),
        ("vit_tiny", {"mlp_ratio": 0}, "mlp_ratio"),
    ],
)
def test_bad_option_values_are_named(name, options, culprit):
    """A badly typed or out-of-range option value raises a ValueError naming the model and the option."""
    with pytest.raises(ValueError, match=rf"^model '{name}': {culprit}"):
        create_model(name, **options)
