"""MACs per sample of the standard torch.nn layer types and the project's layers against literal hand counts.

Conventions (docs/metrics.md#macs): one MAC per multiply-accumulate of a product with a weight or between
activations (attention); bias additions, normalisation, softmax, activations and lookups count 0. An RNN
counts gates·(input·hidden + hidden·hidden) per layer, direction and time step (LSTM 4 gates, GRU 3, RNN 1).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimtrain.compress import apply_masks, to_sparse_linear
from slimtrain.layers import LowRankLinear, SVDConv2d, TuckerConv2d
from slimtrain.metrics import count_macs, summarize
from slimtrain.metrics.mac_formulas import FLOP_FORMULAS

pytestmark = [
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning"),
]


class Attention(nn.Module):
    """``F.scaled_dot_product_attention`` on Q, K, V given as inputs."""

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class FirstOutput(nn.Module):
    """Calls ``module`` and keeps the first output (RNNs and MHA return tuples)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *x):
        return self.module(*x)[0]


def _seq(batch=2, steps=5, features=3):
    return torch.randn(batch, steps, features)


CASES = {
    # name: (model, inputs, literal MACs per sample)
    # 4 tokens · 6 · 5
    "linear": lambda: (nn.Linear(6, 5), (torch.randn(3, 4, 6),), 120),
    # L_out 8 · C_out 6 · (C_in 4 / groups 2) · k 3
    "conv1d-grouped": lambda: (nn.Conv1d(4, 6, 3, groups=2), (torch.randn(2, 4, 10),), 288),
    # 5·5 positions · 4 channels · 1 input channel each · 3·3
    "conv2d-depthwise": lambda: (nn.Conv2d(4, 4, 3, padding=1, groups=4), (torch.randn(2, 4, 5, 5),), 900),
    # every input position (5) · C_in 4 · C_out 6 · k 3
    "conv-transpose1d": lambda: (nn.ConvTranspose1d(4, 6, 3, stride=2), (torch.randn(2, 4, 5),), 360),
    # 25 input positions · C_in 4 · (C_out 6 / groups 2) · 3·3
    "conv-transpose2d-grouped": lambda: (
        nn.ConvTranspose2d(4, 6, 3, groups=2),
        (torch.randn(2, 4, 5, 5),),
        2700,
    ),
    # out 5 · in1 3 · in2 4
    "bilinear": lambda: (nn.Bilinear(3, 4, 5), (torch.randn(2, 3), torch.randn(2, 4)), 60),
    # 5 steps · [layer 0: 2 directions · 4·(3·4 + 4·4) = 224; layer 1 (input 2·4): 2 · 4·(8·4 + 4·4) = 384]
    "lstm-bidirectional-2-layers": lambda: (
        FirstOutput(nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)),
        (_seq(),),
        5 * (224 + 384),
    ),
    # 5 steps · [4·(3·4 + 2·4) gates on the projected state + 4·2 projection] = 5 · 88
    "lstm-projection": lambda: (FirstOutput(nn.LSTM(3, 4, proj_size=2, batch_first=True)), (_seq(),), 440),
    # 5 steps · 3·(3·4 + 4·4)
    "gru": lambda: (FirstOutput(nn.GRU(3, 4, batch_first=True)), (_seq(),), 420),
    # 5 steps · (3·4 + 4·4)
    "rnn-relu": lambda: (FirstOutput(nn.RNN(3, 4, nonlinearity="relu", batch_first=True)), (_seq(),), 140),
    # in-projections 5·3·8·8 = 960, attention 5·5·(8 + 8) = 400, out-projection 5·8·8 = 320
    "mha-self": lambda: (
        FirstOutput(nn.MultiheadAttention(8, 2, batch_first=True)),
        (_seq(features=8),) * 3,
        1680,
    ),
    # q 5·8·8 = 320, k 7·6·8 = 336, v 7·4·8 = 224, attention 5·7·(8 + 8) = 560, out 320
    "mha-cross-kdim-vdim": lambda: (
        FirstOutput(nn.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True)),
        (_seq(features=8), _seq(steps=7, features=6), _seq(steps=7, features=4)),
        1760,
    ),
    # self-attention 960 + 400 + 320, feed-forward 5·8·16 + 5·16·8 = 1280
    "transformer-encoder-layer": lambda: (
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
        (_seq(features=8),),
        2960,
    ),
    "transformer-encoder-2-layers": lambda: (
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2),
        (_seq(features=8),),
        2 * 2960,
    ),
    # 3 heads · 5 queries · 7 keys · (E 4 + Ev 4): the fused CPU kernel
    "sdpa": lambda: (
        Attention(),
        (torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)),
        840,
    ),
    # 3 · 5 · 7 · (4 + 6): Ev ≠ E, the decomposed kernel
    "sdpa-value-dim": lambda: (
        Attention(),
        (torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)),
        1050,
    ),
    "embedding": lambda: (nn.Embedding(10, 4), (torch.randint(0, 10, (2, 5)),), 0),
    "batchnorm": lambda: (nn.BatchNorm2d(4), (torch.randn(2, 4, 3, 3),), 0),
    "layernorm": lambda: (nn.LayerNorm(8), (_seq(features=8),), 0),
    # k×k conv 4 → 2 at 5×5: 2·25·4·9 = 1,800; 1×1 2 → 6: 6·25·2 = 300
    "svd-conv2d": lambda: (SVDConv2d(4, 6, 3, 2, padding=1), (torch.randn(2, 4, 5, 5),), 2100),
    # 1×1 8 → 3: 3·25·8 = 600; 3×3 core 3 → 2: 2·25·3·9 = 1,350; 1×1 2 → 6: 6·25·2 = 300
    "tucker-conv2d": lambda: (TuckerConv2d(8, 6, 3, 2, 3, padding=1), (torch.randn(2, 8, 5, 5),), 2250),
    # 3·10 + 7·3
    "low-rank-linear": lambda: (LowRankLinear(10, 7, 3), (torch.randn(2, 10),), 51),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_macs_per_sample_equal_the_hand_count(name, train):
    """``count_macs`` gives the literal count per sample in either mode (eval: fast paths included)."""
    torch.manual_seed(0)
    model, inputs, literal = CASES[name]()
    macs = count_macs(model.train(train), inputs)
    assert macs.executed == literal
    assert model.training is train and torch.backends.mha.get_fastpath_enabled()  # both restored


def _fast_path_flops(model, inputs):
    """FLOPs of one call with the inference fast path on (eval, no grad), counted with FLOP_FORMULAS."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        model(*inputs)
    return counter.get_total_flops(), {str(op) for op in counter.get_flop_counts()["Global"]}


@pytest.mark.parametrize(
    ("name", "op"),
    [
        ("mha-self", "aten._native_multi_head_attention"),
        ("transformer-encoder-layer", "aten._transformer_encoder_layer_fwd"),
        ("transformer-encoder-2-layers", "aten._transformer_encoder_layer_fwd"),
    ],
)
def test_fast_path_ops_count_as_their_decomposition(name, op):
    """The fused inference kernels count 2·MACs of the decomposed layer (batch 2), the same as training."""
    model, inputs, literal = CASES[name]()
    flops, ops = _fast_path_flops(model, inputs)
    assert ops == {op}  # the fast path really ran
    assert flops == 2 * 2 * literal


def test_encoder_fast_path_on_nested_tensors_counts_the_real_tokens():
    """With a padding mask the fast path runs on sequences of 3 and 5 tokens: per layer 8 tokens ·
    (3·64 + 64 + 2·128) = 4,096 projection MACs and (3² + 5²)·16 = 544 attention MACs.
    """
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3:] = True

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2)

        def forward(self, x):
            return self.encoder(x, src_key_padding_mask=mask)

    flops, ops = _fast_path_flops(Masked(), (_seq(features=8),))
    assert ops == {"aten._transformer_encoder_layer_fwd"}
    assert flops == 2 * 2 * (4_096 + 544)


def test_cudnn_lstm_counts_like_the_cpu_kernels():
    """The cuDNN kernel (run on meta tensors): 5 steps · 2 sequences · 4·(3·4 + 4·4) = 1,120 MACs."""
    steps, batch, n_in, hidden = 5, 2, 3, 4
    weights = [
        torch.empty(*shape, device="meta")
        for shape in ((4 * hidden, n_in), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,))
    ]
    flat = torch.empty(sum(w.numel() for w in weights), device="meta")
    state = torch.empty(1, batch, hidden, device="meta")
    x = torch.empty(steps, batch, n_in, device="meta")
    lstm_mode = 2
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        torch.ops.aten._cudnn_rnn(
            x, weights, 4, flat, state, state, lstm_mode, hidden, 0, 1, False, 0.0, False, False, [], None
        )
    assert counter.get_total_flops() == 2 * 1_120


def test_sparse_linear_counts_its_density():
    """A CSR Linear 10 → 7 holding half its weights: 70 MACs executed, 35 effective."""
    model = nn.Sequential(nn.Linear(10, 7))
    with torch.no_grad():
        model[0].weight[:, :5] = 0
    macs = count_macs(to_sparse_linear(model), torch.randn(2, 10))
    assert (macs.executed, macs.effective) == (70, 35)


def test_pruning_the_head_of_an_lstm_classifier_claims_no_big_speedup():
    """LSTM 8 → 16 over 6 steps (6·4·(8·16 + 16·16) = 9,216 MACs) + head 16 → 10 (160): pruning half the
    head saves 80 of 9,376 MACs, a speed-up of 9,376/9,296, not the 2× of a count that misses the LSTM.
    """

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    x = torch.randn(4, 6, 8)
    dense = Classifier()
    assert count_macs(dense, x).executed == 9_376
    keep = torch.ones(10, 16, dtype=torch.bool)
    keep[:, :8] = False  # half the head (the LSTM's weights are prunable too, but prune only the head here)
    fields = summarize(apply_masks(dense, {"head.weight": keep}), x, reference=dense)
    assert fields["macs_effective"] == 9_296
    assert fields["theoretical_speedup"] == pytest.approx(9_376 / 9_296)
