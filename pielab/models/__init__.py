"""Model registry and the two model families (ResNet for CIFAR-10, LSTM for IMDB)."""

from pielab.models.registry import (
    get_model,
    get_model_entry,
    list_models,
    model_defaults,
    model_task,
    register_model,
)

# Importing the family modules registers their named systems.
from pielab.models import resnet as _resnet  # noqa: F401,E402
from pielab.models import lstm as _lstm  # noqa: F401,E402
from pielab.models.groups import grad_groups  # noqa: E402

TASKS = ("cifar10", "imdb")

__all__ = [
    "TASKS",
    "get_model",
    "get_model_entry",
    "grad_groups",
    "list_models",
    "model_defaults",
    "model_task",
    "register_model",
]
