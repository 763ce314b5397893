"""Tiny models for the compression tests: ResNet-like (option A or B shortcuts), VGG-like, MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: spatial subsampling and zero channels padded on both sides."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.pad, self.stride = out_channels - in_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Sequential()
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """Stem + three basic blocks (4→4, 4→8 stride 2, 8→8) + global pooling + classifier, 3×8×8 inputs."""

    def __init__(self, shortcut: str = "B", num_classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.layer1 = BasicBlock(4, 4, 1, shortcut)
        self.layer2 = nn.Sequential(BasicBlock(4, 8, 2, shortcut), BasicBlock(8, 8, 1, shortcut))
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TinyVGG(nn.Module):
    """Conv stack with biases, a dilated conv and max-pooling, flattened (8×2×2) into two linears."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=2, dilation=2),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=True),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32, 12), nn.ReLU(), nn.Linear(12, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TinyMLP(nn.Module):
    """Flatten → 192 → 16 → 12 → classes, with biases."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(192, 16),
            nn.ReLU(),
            nn.Linear(16, 12),
            nn.ReLU(),
            nn.Linear(12, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def build(name: str, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Build a toy model by name (``resnet_b``, ``resnet_a``, ``vgg``, ``mlp``), in eval mode."""
    factories = {
        "resnet_b": lambda: TinyResNet("B"),
        "resnet_a": lambda: TinyResNet("A"),
        "vgg": TinyVGG,
        "mlp": TinyMLP,
    }
    return randomize_batchnorm(factories[name]()).to(dtype).eval()


def example_input(dtype: torch.dtype = torch.float64, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, dtype=dtype)
