"""Blocks and a plain chain network for spaces that timm's builder cannot express.

The inverted bottleneck and fused IBN are timm's own blocks; only the Tucker
(compression) block, which timm lacks, is composed here from timm's
``ConvNormAct``.
"""
from __future__ import annotations

import torch
from torch import nn


class TuckerBlock(nn.Module):
    """1x1 compress -> kxk regular conv -> 1x1 expand (no activation), residual
    when shapes match (MobileDets' "Tucker convolution")."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int,
                 in_ratio: float, out_ratio: float, act_layer=nn.ReLU):
        super().__init__()
        from timm.layers import ConvNormAct
        from timm.models._efficientnet_builder import make_divisible

        mid_in = make_divisible(in_chs * in_ratio, 8)
        mid_out = make_divisible(out_chs * out_ratio, 8)
        self.compress = ConvNormAct(in_chs, mid_in, 1, act_layer=act_layer)
        self.conv = ConvNormAct(mid_in, mid_out, kernel, stride=stride, act_layer=act_layer)
        self.expand = ConvNormAct(mid_out, out_chs, 1, apply_act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.conv(self.compress(x)))
        return out + x if self.has_skip else out


def make_block(kind: str, in_chs: int, out_chs: int, *, kernel: int, stride: int,
               expand: float = 1, in_ratio: float = 0.25, out_ratio: float = 0.25,
               act_layer=nn.ReLU6, se_layer=None) -> nn.Module:
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual

    if kind == "ir":
        return InvertedResidual(in_chs, out_chs, dw_kernel_size=kernel, stride=stride,
                                exp_ratio=expand, act_layer=act_layer, se_layer=se_layer)
    if kind == "fu":
        return EdgeResidual(in_chs, out_chs, exp_kernel_size=kernel, stride=stride,
                            exp_ratio=expand, act_layer=act_layer, se_layer=se_layer)
    if kind == "tu":
        return TuckerBlock(in_chs, out_chs, kernel, stride, in_ratio, out_ratio, act_layer=act_layer)
    if kind == "ds":
        return DepthwiseSeparableConv(in_chs, out_chs, dw_kernel_size=kernel, stride=stride,
                                      act_layer=act_layer)
    raise ValueError(f"unknown block kind {kind!r}")


class ChainNet(nn.Module):
    """Stem -> blocks -> 1x1 head -> pool -> classifier, timm's feature API names."""

    def __init__(self, blocks: list[nn.Module], *, stem_channels: int, out_channels: int,
                 head_channels: int, num_classes: int, act_layer=nn.ReLU6):
        super().__init__()
        from timm.layers import ConvNormAct

        self.num_classes = num_classes
        self.num_features = head_channels
        self.conv_stem = ConvNormAct(3, stem_channels, 3, stride=2, act_layer=act_layer)
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = ConvNormAct(out_channels, head_channels, 1, act_layer=act_layer)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_channels, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.conv_stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier
