"""Small convolution blocks shared by the FPN and the heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many multiply-adds per call (batch x pixels x in x out channels) a 1x1 convolution in CPU
# training runs as a matrix product. oneDNN's backward pass of small 1x1 convolutions costs 2-13x the
# matrix product's (RPN's 3- and 12-channel outputs, 64-channel maps of 32x64 and smaller); on larger ones
# the convolution is as fast or faster. Measured on the development CPU, see docs/PERFORMANCE.md.
MATMUL_MAX_MACS = 32_000_000


def pointwise_as_matmul(module: nn.Conv2d, x: torch.Tensor) -> bool:
    """Does ``module`` (a 1x1 convolution) run on ``x`` as a matrix product? CPU training on NHWC only."""
    if not (module.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 4):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False  # the NHWC view below would be a copy
    n, _, h, w = x.shape
    return n * h * w * module.in_channels * module.out_channels <= MATMUL_MAX_MACS


class Pointwise(nn.Conv2d):
    """A 1x1 convolution (same parameters and state dict as ``nn.Conv2d(cin, cout, 1)``).

    On small maps in CPU training it is computed as ``linear`` over the NHWC
    view of the activations (same result to float rounding), whose backward
    pass is much cheaper there than oneDNN's; everywhere else (inference,
    CUDA, NCHW input, export) it is the plain convolution.
    """

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if pointwise_as_matmul(self, x):
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


class ConvBNAct(nn.Sequential):
    """k x k convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: bool = True) -> None:
        conv = Pointwise(cin, cout, bias=False) if k == 1 and stride == 1 else \
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
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
            Pointwise(cin, cout, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
