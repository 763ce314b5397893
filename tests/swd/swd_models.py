"""Small models for the SWD tests: a one-conv CNN and a ResNet with a BatchNorm after each residual add."""

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class PostAddBlock(nn.Module):
    """BasicBlock of the SWD reference layout: ReLU(BN_post(BN_pre(conv2(·)) + shortcut(x)))."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.prunablebn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.prunablebn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.prunablebn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(self.prunablebn3(out))


class TinyResNet(nn.Module):
    """Stem + two stages of post-add blocks + global pooling + classifier."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.prunablebn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(PostAddBlock(width, width, 1), PostAddBlock(width, width, 1))
        self.layer2 = nn.Sequential(PostAddBlock(width, 2 * width, 2))
        self.linear = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.prunablebn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


def randomize_bn(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BatchNorm distinct random γ, β (default init makes all γ equal)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=generator) * 2 - 1)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
