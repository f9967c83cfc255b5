"""The CIFAR ResNet of He et al. (2016), with the "option A" shortcuts.

Parameter names follow Yerlan Idelbayev's ``pytorch_resnet_cifar10``
(BSD-2-Clause), so its published checkpoints load directly.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016, Section 4.2.
"""

import torch
import torch.nn.functional as F
from torch import nn

# What timm calls a pretrained cfg: read by ``timm.data.resolve_data_config``.
CIFAR_CFG = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 1.0,
    "crop_mode": "center",
    "num_classes": 10,
    "classifier": "linear",
}


class _PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the channels; no parameters."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        fits = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if fits else _PadShortcut((c_out - c_in) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: 16, 32, 64 channels, global average pool.

    Args:
        depth: 20, 32, 44, 56, 110, ... (``6n + 2``).
        num_classes: size of the linear head; 0 returns the 64 pooled features.
    """

    def __init__(self, depth: int, num_classes: int = 0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = [(16, 16, 1), (16, 32, 2), (32, 64, 2)]
        for i, (c_in, c_out, stride) in enumerate(widths, start=1):
            blocks = [_Block(c_in, c_out, stride)] + [_Block(c_out, c_out, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_features = 64
        self.num_classes = num_classes
        self.linear = nn.Linear(64, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = dict(CIFAR_CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.layer3(self.layer2(self.layer1(y)))
        return self.linear(y.mean(dim=(2, 3)))
