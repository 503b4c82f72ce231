"""The ResNet family for CIFAR-10: one generic class, thin named builders (after torchvision ``models/resnet.py``).

Our ``ResNet`` mirrors torchvision's module names (``conv1``, ``bn1``, ``layer1``..``layerK``, ``fc``; blocks
with ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``; the head ``fc`` is ``Sequential(Dropout, Linear)``
in both), so ``myresnet34`` and the adapted torchvision
``resnet34`` have the same state_dict keys and parameter count, and one ``grad_groups`` serves both.
``residual=False`` gives the plain network of the same layout: no identity path and no shortcut modules at
all, so depth-vs-residual comparisons change exactly one thing.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from pielab.models._checks import check_dropout, check_positive_int
from pielab.models.registry import register_model

# Depth -> blocks per stage. Four-stage basic-block layouts (widths w, 2w, 4w, 8w) as in He et al. 2015, and the
# three-stage 6n+2 CIFAR family of He et al. 2016 (widths w, 2w, 4w; the paper uses w=16).
RESNET_LAYERS: dict[int, list[int]] = {
    10: [1, 1, 1, 1],
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    20: [3, 3, 3],
    32: [5, 5, 5],
    44: [7, 7, 7],
    56: [9, 9, 9],
    110: [18, 18, 18],
}
STEMS = ("cifar",)


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; with ``residual`` the input is added back before the last ReLU.

    A shortcut (1x1 conv + BN) exists only when the residual path needs one (stride or width change);
    a plain block has ``downsample = None`` and no identity path.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_planes != planes * self.expansion):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ResNet(nn.Module):
    """A ResNet for 32x32 inputs: ``layers[k]`` blocks in stage ``k``, width ``width * 2**k``, stride 2 from stage 2.

    ``stem="cifar"`` is a 3x3 stride-1 convolution without max-pool (the ImageNet 7x7/2 stem and pool would
    throw away most of a 32x32 image). ``zero_init_residual`` zeroes the last BN gamma of each residual branch,
    so every block starts as the identity (Goyal et al. 2017; helps short runs); it cannot apply to a plain
    net, whose blocks would then output zeros, so it is ignored when ``residual=False``.
    """

    def __init__(
        self,
        block: type[BasicBlock],
        layers: Sequence[int],
        *,
        residual: bool = True,
        stem: str = "cifar",
        width: int = 64,
        num_classes: int = 10,
        dropout: float = 0.0,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers must list at least one stage")
        for k, blocks in enumerate(layers):
            check_positive_int(f"layers[{k}]", blocks)
        check_positive_int("width", width)
        check_positive_int("num_classes", num_classes)
        check_dropout("dropout", dropout)
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; supported: {', '.join(STEMS)}")

        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self._stage_names: list[str] = []
        in_planes = width
        for k, blocks in enumerate(layers):
            planes = width * 2**k
            stage = [block(in_planes, planes, 1 if k == 0 else 2, residual=residual)]
            in_planes = planes * block.expansion
            stage += [block(in_planes, planes, residual=residual) for _ in range(blocks - 1)]
            name = f"layer{k + 1}"
            setattr(self, name, nn.Sequential(*stage))
            self._stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_planes, num_classes))  # the same keys as resnet34's

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual and residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float images (N, 3, H, W), already normalised -> logits (N, num_classes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _resnet(depth: int, **kwargs: object) -> ResNet:
    if depth not in RESNET_LAYERS:
        supported = ", ".join(str(d) for d in sorted(RESNET_LAYERS))
        raise ValueError(f"unsupported ResNet depth {depth!r}; supported depths: {supported}")
    return ResNet(BasicBlock, RESNET_LAYERS[depth], **kwargs)  # type: ignore[arg-type]


@register_model("myresnet34", task="cifar10", description="our ResNet (depth 34 by default), 3x3 stem, no max-pool")
def myresnet34(
    *, depth: int = 34, residual: bool = True, width: int = 64, dropout: float = 0.0, num_classes: int = 10
) -> ResNet:
    """Our own ResNet-34 adapted to 32x32 inputs; ``depth`` and ``residual`` are the study's knobs."""
    return _resnet(depth, residual=residual, width=width, dropout=dropout, num_classes=num_classes)


@register_model("mycnn", task="cifar10", description="the ResNet-34 layout with every residual connection removed")
def mycnn(
    *, depth: int = 34, residual: bool = False, width: int = 64, dropout: float = 0.0, num_classes: int = 10
) -> ResNet:
    """The report's plain CNN: ``myresnet34``'s network with ``residual=False`` by default."""
    return _resnet(depth, residual=residual, width=width, dropout=dropout, num_classes=num_classes)


@register_model("resnet34", task="cifar10", description="torchvision resnet34 adapted: 3x3 stride-1 conv1, no max-pool")
def resnet34(*, dropout: float = 0.0, num_classes: int = 10) -> nn.Module:
    """``torchvision.models.resnet34(weights=None)`` itself, with the CIFAR stem and a ``num_classes`` head.

    Its width and depth are fixed by torchvision, so it takes neither; ``fc`` is always
    ``Sequential(Dropout, Linear)`` so the state_dict keys do not depend on the dropout rate.
    """
    check_dropout("dropout", dropout)
    check_positive_int("num_classes", num_classes)
    # Imported here: torchvision pulls in torch._dynamo (~2 s, more under load) in every trial process.
    import torchvision

    model = torchvision.models.resnet34(weights=None)
    model.conv1 = _conv3x3(3, 64)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's own conv init
    model.maxpool = nn.Identity()
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model
