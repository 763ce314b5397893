import pytest
import torch
from torch import nn

from slimtrain.metrics import (
    cr_percent_eval_dlrt_convention,
    cr_percent_eval_factorized_only,
    cr_percent_train_dlrt,
    cr_percent_train_tucker,
)


class LowRankLinear(nn.Module):
    """K (n×r) and L (m×r) factors of an n×m Linear, with bias."""

    def __init__(self, m, n, r):
        super().__init__()
        self.k = nn.Parameter(torch.randn(n, r))
        self.l = nn.Parameter(torch.randn(m, r))
        self.bias = nn.Parameter(torch.randn(n))

    def dense_parameter_count(self):
        return self.k.shape[0] * self.l.shape[0] + self.bias.numel()

    def forward(self, x):
        return x @ self.l @ self.k.T + self.bias


def toy():
    """Dense first conv (216) + BN(8), factorized 32→16 at r = 4 (192 of 512), dense last Linear (160)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.Flatten(),
        LowRankLinear(32, 16, 4),
        nn.Linear(16, 10),
    )


def test_eval_dlrt_convention_by_hand():
    """DLRT-Net: (216 + 8 γ + 192 + 160)/(216 + 512 + 160) = 0.6486 → 0.649 → 35.1 %; without γ 36.0 %."""
    assert cr_percent_eval_dlrt_convention(toy()) == pytest.approx(35.1)
    assert cr_percent_eval_dlrt_convention(toy(), count_norm_weights=False) == pytest.approx(36.0)
    assert cr_percent_eval_dlrt_convention(toy(), decimals=None) == pytest.approx(100 * (1 - 576 / 888))


def test_eval_factorized_only_by_hand():
    """RobustDLRT: factorized layers only, 1 − 192/512 = 62.5 %; the two conventions differ."""
    assert cr_percent_eval_factorized_only(toy()) == pytest.approx(62.5)
    assert cr_percent_eval_factorized_only(toy()) != cr_percent_eval_dlrt_convention(toy())


def test_factorized_only_needs_a_factorized_layer():
    """A model without factorized layers raises an error naming the model class."""
    with pytest.raises(ValueError, match="Linear"):
        cr_percent_eval_factorized_only(nn.Linear(3, 3))


def test_train_counts_by_hand():
    """Train: (4·48·4 + 8·16 + 384)/888 = 1.441 → −44.1 %; with grads (1152 + 2·384)/(2·888) → −8.1 %."""
    assert cr_percent_train_dlrt([(16, 32, 4)], 384, 888) == pytest.approx(-44.1)
    assert cr_percent_train_dlrt([(16, 32, 4)], 384, 888, with_grads=True) == pytest.approx(-8.1)


def test_train_tucker_by_hand():
    """Tucker (8, 8, 3, 3) at (4, 4, 3, 3), augmented to (8, 8, 3, 3): 82 + 146 + 144 + 576 + 82 = 1030;
    +100 others over 1000: −13 %.
    """
    layers = [((8, 8, 3, 3), (4, 4, 3, 3), (8, 8, 3, 3))]
    assert cr_percent_train_tucker(layers, 100, 1000) == pytest.approx(-13.0)


class USVLinear(LowRankLinear):
    """Holds U, S, V (n·r + r² + m·r) but is deployed as K = US, L = V: eval count (n + m)·r."""

    def __init__(self, m, n, r):
        super().__init__(m, n, r)
        self.s = nn.Parameter(torch.eye(r))

    def eval_parameter_count(self):
        return self.k.numel() + self.l.numel()


def test_eval_parameter_count_overrides_stored_count():
    """A layer's optional eval_parameter_count() is what the DLRT conventions count, not its r² extra."""
    model = nn.Sequential(USVLinear(32, 16, 4))
    assert cr_percent_eval_factorized_only(model) == pytest.approx(62.5)
