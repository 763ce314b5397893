"""Model zoo behind a registry: ``create_model(name, num_classes=..., in_channels=..., image_size=...)``.

Families (one module each): MLP and LeNet-300-100 (:mod:`.mlp`), LeNet-5 (:mod:`.lenet`), CIFAR ResNets
(:mod:`.resnet_cifar`), VGG-16-BN (:mod:`.vgg`), WideResNet-28-k (:mod:`.wide_resnet`) and a small vision
transformer (:mod:`.vit`). Every model's last layer is the ``nn.Linear`` attribute ``classifier``.
"""

# Importing the family modules registers their models.
from slimtrain.models import lenet, mlp, resnet_cifar, vgg, vit, wide_resnet
from slimtrain.models.registry import create_model, list_models, register_model

__all__ = [
    "create_model",
    "lenet",
    "list_models",
    "mlp",
    "register_model",
    "resnet_cifar",
    "vgg",
    "vit",
    "wide_resnet",
]
