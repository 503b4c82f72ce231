"""First and last layer groups of a model, for the gradient-norm ratio that shows vanishing gradients.

Heads and embeddings are excluded: the evidence is how much gradient reaches the first layer of the deep
part compared with its last layer.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch.nn as nn

from pielab.models.lstm import LayerwiseLSTM, LSTMClassifier

# nn.LSTM and our LSTM name parameters weight_ih_l3, bias_hh_l3_reverse, ...: the layer index is in the suffix.
_LSTM_LAYER = re.compile(r"_l(\d+)(?:_reverse)?$")
_RESNET_STAGE = re.compile(r"layer(\d+)")


def _recurrent_layers(rnn: nn.Module) -> list[list[nn.Parameter]]:
    if isinstance(rnn, LayerwiseLSTM):
        return [list(layer.parameters()) for layer in rnn.layers]
    by_layer: dict[int, list[nn.Parameter]] = defaultdict(list)
    for name, param in rnn.named_parameters():
        match = _LSTM_LAYER.search(name)
        if match is None:
            raise ValueError(f"grad_groups: cannot tell the layer of LSTM parameter {name!r}")
        by_layer[int(match.group(1))].append(param)
    return [by_layer[k] for k in sorted(by_layer)]


def grad_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{"first": [...], "last": [...]}``: stem + first block / last block of a ResNet (ours or torchvision's),
    first / last recurrent layer of an LSTM classifier (the same list for depth 1).

    A ``torch.compile`` wrapper is looked through, so the parameters are the ones the optimizer updates.
    """
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, LSTMClassifier):
        layers = _recurrent_layers(model.rnn)
        return {"first": layers[0], "last": layers[-1]}
    stages = sorted(
        ((int(m.group(1)), module) for name, module in model.named_children() if (m := _RESNET_STAGE.fullmatch(name))),
        key=lambda item: item[0],
    )
    if stages and hasattr(model, "conv1") and hasattr(model, "bn1"):
        first_block, last_block = stages[0][1][0], stages[-1][1][-1]
        first = [*model.conv1.parameters(), *model.bn1.parameters(), *first_block.parameters()]
        return {"first": first, "last": list(last_block.parameters())}
    raise ValueError(f"grad_groups: no layer groups known for a {type(model).__name__}")
