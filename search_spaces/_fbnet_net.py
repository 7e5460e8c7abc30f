"""The HW-NAS-Bench FBNet network as torch modules (imported lazily by ``fbnet``)."""
from __future__ import annotations

import torch
from torch import nn

from search_spaces.fbnet import block_config


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ChannelShuffle(nn.Module):
    """Reshape-transpose shuffle (exports to ONNX everywhere, unlike ``nn.ChannelShuffle``)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedBottleneck(nn.Module):
    """1x1 (grouped) expand -> [shuffle] -> kxk depthwise -> 1x1 (grouped) project,
    with a residual where shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, groups: int, stride: int):
        super().__init__()
        mid = c_in * expansion
        layers: list[nn.Module] = [nn.Conv2d(c_in, mid, 1, groups=groups, bias=False),
                                   nn.BatchNorm2d(mid), nn.ReLU(inplace=True)]
        if groups > 1:
            layers.append(ChannelShuffle(groups))
        # HW-NAS-Bench pads ceil((k - stride) / 2): same as k // 2 for k in {3, 5}
        layers += [nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                   nn.Conv2d(mid, c_out, 1, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def make_block(choice: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if choice == "skip":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return ConvBNReLU(c_in, c_out, 1, stride)
    kernel, expansion, groups = block_config(choice)
    return InvertedBottleneck(c_in, c_out, kernel, expansion, groups, stride)


class FBNetNetwork(nn.Module):
    def __init__(self, layers, specs, stem_channels: int, head_channels: int, num_classes: int):
        super().__init__()
        self.stem = ConvBNReLU(3, stem_channels, 3, 1)
        self.cells = nn.Sequential(*(make_block(c, s.c_in, s.c_out, s.stride)
                                     for c, s in zip(layers, specs)))
        self.head = ConvBNReLU(specs[-1].c_out, head_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.cells(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
