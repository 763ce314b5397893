"""The conformance models: Hugging Face ``transformers`` models from small configs and torch.nn built-ins.

Every model is one that no part of slimtrain was written for. Each is built from a fixed seed, with random
weights, and called as its users call it (``pixel_values``, ``input_ids`` + ``attention_mask``, or a
tensor). The parameter counts are literal hand counts (see each builder's comment), never computed by
slimtrain's counting functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class Case:
    """One conformance model.

    Attributes:
        name: Row name of the table.
        source: ``"transformers"`` or ``"torch.nn"``.
        build: Builds the model (seeded by the caller).
        inputs: Builds example inputs (a tensor or a dict of keyword inputs).
        params_all: Hand count of distinct parameter entries (a tied tensor once).
        params_prunable: Hand count of the prunable population's entries (weights of convs, linears,
            transposed linears, RNN and attention input projections; a tied tensor once).
        tied: Module paths of the first tied pair, if any (their ``weight`` is one tensor).
        description: What the model exercises, for the compatibility page.
    """

    name: str
    source: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    params_all: int
    params_prunable: int
    tied: tuple[str, str] | None
    description: str


def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _image(size: int = 32) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(2, 3, size, size)


def _tokens(vocab: int = 50) -> Callable[[], dict[str, torch.Tensor]]:
    def make() -> dict[str, torch.Tensor]:
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, 6:] = 0  # a padded second sequence: the mask must reach the model
        return {"input_ids": torch.randint(0, vocab, (2, 8)), "attention_mask": mask}

    return make


def hf_resnet() -> nn.Module:
    t = _transformers()
    config = t.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4
    )
    return t.ResNetForImageClassification(config)


def hf_mobilenet_v2() -> nn.Module:
    t = _transformers()
    config = t.MobileNetV2Config(
        num_channels=3,
        image_size=32,
        depth_multiplier=0.1,
        min_depth=4,
        finegrained_output=False,
        num_labels=4,
    )
    return t.MobileNetV2ForImageClassification(config)


def hf_convnext() -> nn.Module:
    t = _transformers()
    config = t.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    return t.ConvNextForImageClassification(config)


def hf_vit() -> nn.Module:
    t = _transformers()
    config = t.ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    return t.ViTForImageClassification(config)


def hf_bert() -> nn.Module:
    t = _transformers()
    config = t.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    return t.BertForSequenceClassification(config)


def hf_gpt2() -> nn.Module:
    t = _transformers()
    # No key/value cache in the outputs: as for any export (a cache object is not a tensor output).
    config = t.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, use_cache=False)
    return t.GPT2LMHeadModel(config)


class TiedTransformer(nn.Module):
    """Embedding(50, 16) → TransformerEncoder (1 layer, 2 heads, ff 32) → Linear(16, 50) tied to it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 50)
        self.head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0))


class RNNClassifier(nn.Module):
    """A recurrent layer over (N, 6, 8) sequences, then a Linear on the last step's features."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "lstm":  # stacked and bidirectional: 2 layers × 2 directions
            self.rnn = nn.LSTM(8, 12, num_layers=2, bidirectional=True, batch_first=True)
            features = 24
        else:
            self.rnn = nn.GRU(8, 12, batch_first=True)
            features = 12
        self.classifier = nn.Linear(features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.classifier(out[:, -1])


def lstm_classifier() -> nn.Module:
    return RNNClassifier("lstm")


def gru_classifier() -> nn.Module:
    return RNNClassifier("gru")


def conv_transpose_autoencoder() -> nn.Module:
    """Conv2d 3→8 (s2), BN, ReLU, Conv2d 8→16 (s2), ReLU, ConvTranspose2d 16→8 (s2), ReLU, 8→3 (s2)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1),
    )


def conv1d_net() -> nn.Module:
    """Conv1d 4→8 (k3), BN1d, ReLU, Conv1d 8→16 (k3), ReLU, average pool, Linear 16→4."""
    return nn.Sequential(
        nn.Conv1d(4, 8, 3, bias=False),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Conv1d(8, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def grouped_conv_net() -> nn.Module:
    """Conv 3→8, grouped conv 8→16 (2 groups), BN, depthwise conv 16→16, BN, ReLU, pool, Linear 16→4."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


class BatchNormAct2d(nn.BatchNorm2d):
    """A BatchNorm2d with a fused ReLU, as timm's ``BatchNormAct2d`` (a subclass with its own forward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


def bn_act_net() -> nn.Module:
    """Conv 3→8, BatchNormAct(8), Conv 8→16, BatchNormAct(16), pool, Linear 16→4."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        BatchNormAct2d(8),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        BatchNormAct2d(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


class Conv2dSame(nn.Conv2d):
    """TensorFlow-style "same" padding computed from the input size, as timm's ``Conv2dSame``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1], strict=True
        ):
            total = max((-(size // -s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def same_pad_net() -> nn.Module:
    """Conv2dSame 3→8 (k3, s2), BN, ReLU, Conv2dSame 8→16 (k4), ReLU, pool, Linear 16→4."""
    return nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Conv2dSame(8, 16, 4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def weight_norm_net() -> nn.Module:
    """Conv 3→8, ReLU, pool, weight-normed Linear 8→16, ReLU, Linear 16→4."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.utils.parametrizations.weight_norm(nn.Linear(8, 16)),
        nn.ReLU(),
        nn.Linear(16, 4),
    )


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        # Hugging Face. Counts: the sum of the distinct parameters' sizes, by hand from each config's layers.
        Case("hf_resnet", "transformers", hf_resnet, _image(), 1800, 1676, None, "ResNet (bottleneck)"),
        Case("hf_mobilenet_v2", "transformers", hf_mobilenet_v2, _image(), 41940, 37648, None, "MobileNetV2"),
        Case("hf_convnext", "transformers", hf_convnext, _image(), 5004, 4696, None, "ConvNeXt (LayerNorm)"),
        Case("hf_vit", "transformers", hf_vit, _image(16), 3396, 2880, None, "ViT"),
        Case("hf_bert", "transformers", hf_bert, _tokens(), 3667, 2352, None, "BERT, attention mask"),
        Case(
            "hf_gpt2",
            "transformers",
            hf_gpt2,
            _tokens(),
            4368,
            3872,
            ("lm_head", "transformer.wte"),
            "GPT-2: Conv1D (a transposed Linear), LM head tied to the token embedding",
        ),
        # torch.nn built-ins.
        Case(
            "tied_transformer",
            "torch.nn",
            TiedTransformer,
            _tokens(),
            3074,
            2848,
            ("head", "embed"),
            "nn.TransformerEncoder, embedding tied to the output head",
        ),
        Case(
            "lstm",
            "torch.nn",
            lstm_classifier,
            lambda: torch.randn(2, 6, 8),
            5860,
            5472,
            None,
            "nn.LSTM, 2 layers, bidirectional",
        ),
        Case("gru", "torch.nn", gru_classifier, lambda: torch.randn(2, 6, 8), 844, 768, None, "nn.GRU"),
        Case(
            "conv_transpose",
            "torch.nn",
            conv_transpose_autoencoder,
            _image(16),
            3843,
            3800,
            None,
            "ConvTranspose2d encoder-decoder",
        ),
        Case("conv1d", "torch.nn", conv1d_net, lambda: torch.randn(2, 4, 20), 580, 544, None, "Conv1d net"),
        Case(
            "grouped_conv",
            "torch.nn",
            grouped_conv_net,
            _image(8),
            1076,
            1000,
            None,
            "grouped and depthwise Conv2d",
        ),
        Case(
            "bn_act",
            "torch.nn",
            bn_act_net,
            _image(8),
            1484,
            1432,
            None,
            "a BatchNorm2d subclass with an activation",
        ),
        Case(
            "same_pad_conv",
            "torch.nn",
            same_pad_net,
            _image(9),
            2364,
            2328,
            None,
            "a Conv2d subclass with its own padding",
        ),
        Case("weight_norm", "torch.nn", weight_norm_net, _image(8), 452, 408, None, "a weight-normed Linear"),
    ]
}
