"""Weight initialisation shared by the convolutional networks."""

from __future__ import annotations

from torch import nn


def kaiming_init_(model: nn.Module) -> None:
    """Initialise convolutions with Kaiming-normal weights and batch norms as the identity, in place.

    Convolutions: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` with zero bias, the scheme of
    He et al. (2015) as used by the reference CIFAR ResNet, VGG and WideResNet codes. Batch norms: weight 1,
    bias 0. Linear layers keep PyTorch's default initialisation. Only the global torch RNG is used.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
