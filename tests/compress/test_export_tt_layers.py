"""NN-BCD's tensor-train layers survive export: save, reload without pickles, same outputs."""

import torch

from slimtrain.compress import load_exported, save_exported
from slimtrain.layers import TTLinear
from slimtrain.models import create_model


def test_tt_layers_round_trip(tmp_path):
    """A registry MLP whose hidden layers are TT layers reloads with the same cores and outputs."""
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 8, "widths": [16]}
    model = create_model("mlp", **kwargs).eval()
    hidden = model.hidden[0]
    model.hidden[0] = TTLinear.from_weight(hidden.weight.detach(), modes=(4, 4, 8, 8), rank=3)
    path = save_exported(model, tmp_path / "tt", base="mlp", base_kwargs=kwargs)
    loaded = load_exported(path)
    assert isinstance(loaded.hidden[0], TTLinear) and loaded.hidden[0].ranks == model.hidden[0].ranks
    x = torch.randn(5, 1, 8, 8)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-6, atol=1e-6)
