"""EfficientPS's 2-way FPN: a top-down and a bottom-up path, fused per level.

Plain FPNs only send semantics down from coarse to fine levels. EfficientPS
adds a bottom-up path that carries fine localisation up, and sums both paths'
outputs at each level before a separable 3x3 output conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panoptic_ros.model.layers import ConvBNAct, SeparableConv


class TwoWayFPN(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.lateral_td = nn.ModuleList(ConvBNAct(c, channels) for c in in_channels)
        self.lateral_bu = nn.ModuleList(ConvBNAct(c, channels) for c in in_channels)
        # Bottom-up downsampling between consecutive levels (stride 2).
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False),
                          nn.BatchNorm2d(channels))
            for _ in in_channels[:-1])
        self.output = nn.ModuleList(SeparableConv(channels, channels) for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """[C2..C5] -> [P2..P5] (strides 4, 8, 16, 32), each with ``channels`` maps."""
        n = len(feats)
        bottom_up: list[torch.Tensor] = []
        for i, f in enumerate(feats):
            x = self.lateral_bu[i](f)
            if i:
                x = x + self.down[i - 1](bottom_up[-1])
            bottom_up.append(x)
        top_down: list[torch.Tensor] = [self.lateral_td[n - 1](feats[n - 1])]
        for i in range(n - 2, -1, -1):
            x = self.lateral_td[i](feats[i])
            top_down.insert(0, x + F.interpolate(top_down[0], size=x.shape[-2:], mode="nearest"))
        return [self.output[i](top_down[i] + bottom_up[i]) for i in range(n)]
