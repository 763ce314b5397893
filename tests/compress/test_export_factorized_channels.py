"""Channels inside a factorized layer stay: its ranks and widths are its recorded configuration.

A rank direction that happens to be exactly zero (TDLRT holding a rank at its minimum above the layer's
actual rank) was removed by the export's zero-channel pass, leaving a ``TuckerConv2d`` whose ``rank_in``
contradicted its weights: the export saved nothing loadable.
"""

import torch
from torch import nn

import slimtrain
from slimtrain import compress
from slimtrain.layers import TuckerConv2d


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        TuckerConv2d(8, 6, 1, rank_out=2, rank_in=3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )  # fmt: skip


def test_a_zero_rank_direction_is_kept_and_the_export_loads(tmp_path):
    model = _model()
    with torch.no_grad():
        model[2].core.weight[:, 2] = 0.0  # the third projected channel is read by nothing
        model[0].weight[5] = 0.0  # an ordinary zero channel, outside the factorized layer
        model[0].bias[5] = 0.0
    x = torch.randn(2, 3, 8, 8)
    exported = compress.to_exported(model, "native", x)
    assert exported[2].core.weight.shape == (2, 3, 1, 1)  # the layer's recorded ranks hold
    assert exported[0].out_channels == 8  # coupled to the factorized layer's input: kept too
    compress.save_exported(exported, tmp_path / "e", base=_model)
    loaded = slimtrain.load(tmp_path / "e", factory=_model)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-5, atol=1e-6)
