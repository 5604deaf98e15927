"""Small convolution blocks shared by the FPN and the heads."""
from __future__ import annotations

from torch import nn


class ConvBNAct(nn.Sequential):
    """k x k convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise k x k (optionally dilated, per axis) then pointwise 1x1, BN, ReLU.

    EfficientPS uses separable convolutions throughout its FPN and heads: they
    cost about a ninth of a dense 3x3 at these widths.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1)) -> None:
        pad = (dilation[0] * (k // 2), dilation[1] * (k // 2))
        super().__init__(
            nn.Conv2d(cin, cin, k, stride, pad, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
