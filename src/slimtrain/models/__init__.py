"""Model zoo behind a registry: ``create_model(name, num_classes=..., in_channels=..., image_size=...)``.

Families (one module each): MLP and LeNet-300-100 (:mod:`.mlp`), LeNet-5 (:mod:`.lenet`), CIFAR ResNets
(:mod:`.resnet_cifar`), VGG-16-BN (:mod:`.vgg`), WideResNet-28-k (:mod:`.wide_resnet`) and a small vision
transformer (:mod:`.vit`). Every model's last layer is the ``nn.Linear`` attribute ``classifier``. Models of
your own are named by import path (:mod:`.factory`: :func:`resolve_factory`, :func:`build_model`).
"""

# Importing the family modules registers their models.
from slimtrain.models import lenet, mlp, resnet_cifar, vgg, vit, wide_resnet
from slimtrain.models.factory import build_model, model_arguments, resolve_factory
from slimtrain.models.registry import create_model, list_models, register_model

__all__ = [
    "build_model",
    "create_model",
    "lenet",
    "list_models",
    "mlp",
    "model_arguments",
    "register_model",
    "resnet_cifar",
    "resolve_factory",
    "vgg",
    "vit",
    "wide_resnet",
]
