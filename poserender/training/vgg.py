"""VGG19 features for the perceptual and style losses, with weights from a user's file.

The layers are torchvision's ``vgg19().features`` with the same indices (``features.0`` ...
``features.28``), so a torchvision-format state dict loads as it is (the ImageNet weights
``vgg19-dcbb9e9d.pth``, saved with ``torch.save(model.state_dict())``). Nothing is ever
downloaded: without a weights file the losses that need VGG are switched off by the trainer.
Like the reference, the five outputs are relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

import torch
from torch import nn

from ..errors import UserError
from ..models.checkpoint import safe_load

#: torchvision's VGG19 'E' configuration up to relu5_1 (features index 29)
_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
#: the reference's slices end after these features indices (relu1_1 .. relu5_1)
SLICE_ENDS = (1, 6, 11, 20, 29)


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk; ``forward(x) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]``."""

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        channels = 3
        for spec in _LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=True)]
                channels = spec
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)     # always frozen, always eval

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in SLICE_ENDS:
                outputs.append(x)
        return outputs


def load_vgg19(path: Union[str, Path]) -> VGG19Features:
    """Build :class:`VGG19Features` from a torchvision-format VGG19 state dict file.

    Keys beyond relu5_1 (``features.30+``, ``classifier.*``) are ignored; a ``module.`` prefix
    is stripped. Any missing key or wrong shape is a :class:`UserError` naming the file.
    """
    path = Path(path)
    expected = "a torchvision VGG19 state dict (e.g. vgg19-dcbb9e9d.pth)"
    if not path.is_file():
        raise UserError(f"not found; expected {expected}", path)
    state = safe_load(path, expected)
    if not isinstance(state, dict):
        raise UserError(f"holds a {type(state).__name__}; expected {expected}", path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model = VGG19Features()
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(f"has no {missing[0]} ({len(missing)} VGG19 feature keys missing); expected {expected}",
                        path)
    for key, value in wanted.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)} "
                            f"({expected})", path)
    model.load_state_dict({k: state[k] for k in wanted})
    return model
