"""EfficientPS's semantic head: separate large-scale and small-scale branches.

- LSFE (large-scale feature extractor) on P2 and P3 (strides 4 and 8): two
  separable 3x3 convs; cheap, keeps fine detail.
- DPC (dense prediction cell, from DeepLab's architecture search) on P4 and P5
  (strides 16 and 32): five dilated separable convs that see long-range context.
- MC (mismatch correction) modules upsample the small-scale branch into the
  large-scale one, so both scales are combined before the classifier.

EfficientPS classifies at stride 4 and upsamples. At the demo's 256x512
input, poles, signs, lights and grass strips are 2-6 pixels wide, and even a
perfect stride-4 labelling scores stuff PQ 0.78 on our held-out synthetic
frames, 0.91 at stride 2 (tools/semantic_resolution_ceiling.py,
docs/PERFORMANCE.md). :class:`DetailRefinement` therefore
adds a stride-2 step: the stride-4 logits, upsampled, meet the backbone's
stride-2 features in two separable convs whose zero-initialised output is
added to them, so it starts as the identity and learns only corrections.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panoptic_ros.model.layers import ConvBNAct, Pointwise, SeparableConv


class LSFE(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(SeparableConv(cin, cout), SeparableConv(cout, cout))


class DPC(nn.Module):
    """Dilation rates (rows, cols) of the DeepLab DPC cell that EfficientPS uses."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.a = SeparableConv(cin, cout, dilation=(1, 6))
        self.b = SeparableConv(cout, cout, dilation=(1, 1))
        self.c = SeparableConv(cout, cout, dilation=(6, 21))
        self.d = SeparableConv(cout, cout, dilation=(18, 15))
        self.e = SeparableConv(cout, cout, dilation=(6, 3))
        self.project = ConvBNAct(5 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        d = self.d(a)
        return self.project(torch.cat([a, self.b(a), self.c(a), d, self.e(d)], dim=1))


class MC(nn.Module):
    """Two separable convs, then 2x bilinear upsampling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(SeparableConv(channels, channels), SeparableConv(channels, channels))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.convs(x), size=size, mode="bilinear", align_corners=False)


class SemanticHead(nn.Module):
    def __init__(self, fpn_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.lsfe4, self.lsfe8 = LSFE(fpn_channels, channels), LSFE(fpn_channels, channels)
        self.dpc16, self.dpc32 = DPC(fpn_channels, channels), DPC(fpn_channels, channels)
        self.mc16, self.mc8 = MC(channels), MC(channels)
        self.classifier = Pointwise(4 * channels, num_classes)

    def forward(self, p: list[torch.Tensor]) -> torch.Tensor:
        """[P2..P5] -> semantic logits (B, num_classes) at stride 4 (P2's size)."""
        p4, p8, p16, p32 = p
        s32 = self.dpc32(p32)
        s16 = self.dpc16(p16) + F.interpolate(s32, size=p16.shape[-2:], mode="bilinear", align_corners=False)
        s8 = self.lsfe8(p8) + self.mc16(s16, p8.shape[-2:])
        s4 = self.lsfe4(p4) + self.mc8(s8, p4.shape[-2:])
        size4 = p4.shape[-2:]
        up = [F.interpolate(t, size=size4, mode="bilinear", align_corners=False) for t in (s32, s16, s8)]
        return self.classifier(torch.cat(up + [s4], dim=1))


class DetailRefinement(nn.Module):
    """Stride-4 logits + stride-2 backbone features -> refined stride-2 logits."""

    def __init__(self, num_classes: int, detail_channels: int, channels: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(SeparableConv(num_classes + detail_channels, channels),
                                   SeparableConv(channels, channels))
        self.out = Pointwise(channels, num_classes)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, logits4: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(logits4, size=detail.shape[-2:], mode="bilinear", align_corners=False)
        return up + self.out(self.convs(torch.cat([up, detail], dim=1)))
