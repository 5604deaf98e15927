"""Fuzzing: generated malformed Image, CompressedImage and CameraInfo messages (real rclpy message objects)
through the decoders, through the node's subscription callbacks in-process, and over DDS to a node process.

What must hold for every generated message: no crash, no exception escaping a decoder except its typed
rejection (``InputRejected`` / ``ValueError``), no exception escaping a callback, and every rejection
counted in the diagnostics counter of its kind. Raw images are judged by an oracle written here from the
sensor_msgs rules (size, encoding, step, data length), independent of the node's code, so the counters
are checked kind by kind, exactly.

Sizes: ``PANOPTIC_RELIABILITY_SIZE=full`` (tools/reliability.py) multiplies the message counts; CI runs
at least 1,000 malformed messages through each of the two node-callback tests.
"""
from __future__ import annotations

import io
import math
import os
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("panoptic_ros.msg")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from helpers_ros import discover_locally, own_context, random_domain_id  # noqa: E402
from panoptic_ros.camera import CameraModel, CameraMounting  # noqa: E402
from panoptic_ros.image_codec import (DEFAULT_MAX_PIXELS, ImageDecodeError, compressed_to_numpy,  # noqa: E402
                                      parse_compressed_format)
from panoptic_ros.pipeline import MIN_IMAGE_SIDE_PX  # noqa: E402
from panoptic_ros.ros import convert, diagnostics  # noqa: E402
from helpers_report import record
from helpers_model import save_tiny_model

FULL = os.environ.get("PANOPTIC_RELIABILITY_SIZE", "ci") == "full"
CODEC_EXAMPLES = 5000 if FULL else 1000  # per message type, decoder level
CALLBACK_EXAMPLES = 5000 if FULL else 1300  # per node test; at least 1,000 of them malformed
MIN_MALFORMED = 4000 if FULL else 1000
DDS_MESSAGES = 1000 if FULL else 300
BURST = 8  # messages sent over DDS before waiting for the node to have them all
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------- the oracle for raw images

# Bytes per pixel of every encoding the node accepts as colour (sensor_msgs/image_encodings.hpp).
COLOUR_BPP = {f"{c}{b}": n * (int(b) // 8) for c, n in (("rgb", 3), ("bgr", 3), ("rgba", 4), ("bgra", 4),
                                                        ("mono", 1)) for b in ("8", "16")}
COLOUR_BPP.update({f"bayer_{p}{b}": int(b) // 8 for p in ("rggb", "bggr", "gbrg", "grbg") for b in ("8", "16")})
COLOUR_BPP.update({"uyvy": 2, "yuv422": 2, "yuyv": 2, "yuv422_yuy2": 2, "8UC1": 1, "8UC3": 3, "8UC4": 4,
                   "16UC1": 2, "16UC3": 6, "16UC4": 8})
YUV = {"uyvy", "yuv422", "yuyv", "yuv422_yuy2"}
# Encodings ROS defines that carry no colours (or that we do not decode): refused as ``encoding``.
NOT_COLOUR = ["8UC2", "16UC2", "8SC1", "8SC3", "16SC1", "32SC1", "32SC4", "32FC1", "32FC3", "64FC1", "64FC2",
              "nv12", "nv21", "nv24"]
NEAR_MISSES = ["", "RGB8", " rgb8", "rgb8 ", "rgb8\x00", "bgr 8", "rgb", "mono", "bayer_rggb", "bayer_xyz8",
               "8UC5", "32FC5", "16FC1", "CV_8UC3", "jpeg", "yuv420"]


def expected_raw_kind(height: int, width: int, encoding: str, step: int, length: int) -> str | None:
    """The diagnostics kind a raw image must be rejected with, or None when it must be processed."""
    if min(height, width) < MIN_IMAGE_SIDE_PX or height * width > DEFAULT_MAX_PIXELS:
        return convert.SIZE
    bpp = COLOUR_BPP.get(encoding)
    if bpp is None:
        return convert.ENCODING
    if step < width * bpp or (encoding in YUV and width % 2) or length != height * step:
        return convert.LAYOUT
    return None


# --------------------------------------------------------------------------- generated messages


@dataclass(frozen=True)
class RawSpec:
    height: int
    width: int
    encoding: str
    step: int
    length: int
    is_bigendian: int
    seed: int
    stamp_s: float
    defect: str | None

    @property
    def expected(self) -> str | None:
        return expected_raw_kind(self.height, self.width, self.encoding, self.step, self.length)

    @property
    def on_the_wire(self) -> "RawSpec":
        """The image as DDS delivers it: CDR strings end at the first NUL ('rgb8\\x00junk' arrives as 'rgb8')."""
        return replace(self, encoding=self.encoding.split("\x00", 1)[0])

    def message(self) -> Image:
        data = np.random.default_rng(self.seed).integers(0, 256, self.length, dtype=np.uint8).tobytes()
        m = Image(height=self.height, width=self.width, encoding=self.encoding, step=self.step,
                  is_bigendian=self.is_bigendian, data=data)
        set_stamp(m, self.stamp_s, "fuzz_optical")
        return m


@dataclass(frozen=True)
class CompressedSpec:
    format: str
    data: bytes
    stamp_s: float
    defect: str | None

    @property
    def expected(self) -> str | None:
        """Cheap checks (format, empty) as the contract says; pixel damage is judged by the core decoder."""
        try:
            parsed_ok = bool(parse_compressed_format(self.format))
        except ImageDecodeError:
            parsed_ok = False
        if not parsed_ok:
            return convert.FORMAT
        if not self.data:
            return convert.CORRUPT
        try:
            pixels = compressed_to_numpy(self.format, self.data)
        except ImageDecodeError:
            return convert.CORRUPT
        if pixels.dtype not in (np.uint8, np.uint16):
            return convert.FORMAT
        return convert.SIZE if min(pixels.shape[:2]) < MIN_IMAGE_SIDE_PX else None

    def message(self) -> CompressedImage:
        m = CompressedImage(format=self.format, data=self.data)
        set_stamp(m, self.stamp_s, "fuzz_optical")
        return m


@dataclass(frozen=True)
class InfoSpec:
    k: tuple[float, ...]
    width: int
    height: int
    stamp_s: float
    defect: str | None

    @property
    def valid(self) -> bool:
        """The contract: finite K, a size within the pixel limit, focal lengths of a real camera for that
        size (convert.FOCAL_TO_SIDE_RANGE) and a principal point not far outside the image."""
        k, w, h = self.k, self.width, self.height
        if not all(math.isfinite(v) for v in k) or w < 1 or h < 1 or w * h > DEFAULT_MAX_PIXELS:
            return False
        lo, hi = (r * max(w, h) for r in convert.FOCAL_TO_SIDE_RANGE)
        return (lo <= k[0] <= hi and lo <= k[4] <= hi and abs(k[2]) <= convert.PRINCIPAL_POINT_MAX_SIDES * w
                and abs(k[5]) <= convert.PRINCIPAL_POINT_MAX_SIDES * h)

    def message(self) -> CameraInfo:
        m = CameraInfo(width=self.width, height=self.height, k=list(self.k), distortion_model="plumb_bob",
                       d=[0.0] * 5)
        set_stamp(m, self.stamp_s, "fuzz_optical")
        return m


def set_stamp(msg: Any, stamp_s: float, frame_id: str) -> None:
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int(round((stamp_s % 1) * 1e9)) % 1_000_000_000


U32 = 2**32 - 1
STAMPS = st.sampled_from([10.0, 10.5, 11.0, 11.5, 12.0]) | st.floats(0.0, 4e9)
RAW_DEFECTS = ["zero_height", "zero_width", "too_small", "too_many_pixels", "unknown_encoding", "not_colour",
               "short_step", "truncated", "longer", "empty_data", "odd_yuv_width", "huge_step", "wild"]


@st.composite
def raw_specs(draw: st.DrawFn, valid_weight: int = 1) -> RawSpec:
    """A valid small image, then (mostly) exactly one defect; 'wild' draws every field at random."""
    defect = draw(st.sampled_from([None] * valid_weight + RAW_DEFECTS * 2))
    encoding = draw(st.sampled_from(sorted(COLOUR_BPP)))
    h, w = draw(st.integers(MIN_IMAGE_SIDE_PX, 40)), draw(st.integers(MIN_IMAGE_SIDE_PX, 40))
    if encoding in YUV and w % 2:
        w += 1
    step = w * COLOUR_BPP[encoding] + draw(st.sampled_from([0, 0, 1, 3, 8]))
    length = None
    if defect == "zero_height":
        h = 0
    elif defect == "zero_width":
        w = 0
    elif defect == "too_small":
        h, w = draw(st.sampled_from([(h, 1), (1, w), (2, 2), (MIN_IMAGE_SIDE_PX - 1, w), (h, 3)]))
        if encoding in YUV and w % 2:
            w += 1
        step = w * COLOUR_BPP[encoding]
    elif defect == "too_many_pixels":
        h, w = draw(st.sampled_from([(8001, 8001), (U32, 2), (U32, U32), (65536, 1024)]))
        step, length = w * COLOUR_BPP[encoding], draw(st.integers(0, 64))
    elif defect == "unknown_encoding":
        encoding = draw(st.sampled_from(NEAR_MISSES) | st.text(max_size=12))
    elif defect == "not_colour":
        encoding = draw(st.sampled_from(NOT_COLOUR))
    elif defect == "short_step":
        step = draw(st.integers(0, max(0, w * COLOUR_BPP[encoding] - 1)))
    elif defect == "truncated":
        length = draw(st.integers(0, h * step - 1))
    elif defect == "longer":
        length = h * step + draw(st.integers(1, 64))
    elif defect == "empty_data":
        length = 0
    elif defect == "odd_yuv_width":
        encoding = draw(st.sampled_from(sorted(YUV)))
        w = 2 * draw(st.integers(MIN_IMAGE_SIDE_PX // 2, 20)) + 1
        step = 2 * w
    elif defect == "huge_step":
        step = draw(st.sampled_from([2**31, U32, 2**20 + 1]))
        length = draw(st.integers(0, 256))
    elif defect == "wild":
        h = draw(st.integers(0, 48) | st.sampled_from([2**16, 2**31, U32]))
        w = draw(st.integers(0, 48) | st.sampled_from([2**16, 2**31, U32]))
        encoding = draw(st.sampled_from(sorted(COLOUR_BPP) + NOT_COLOUR + NEAR_MISSES))
        step = draw(st.integers(0, 300) | st.sampled_from([2**31, U32]))
        exact = h * step if h * step <= 40_000 else 0
        length = draw(st.sampled_from([exact, max(exact - 1, 0), exact + 1]) | st.integers(0, 2000))
    if length is None:
        length = h * step
    big_endian = draw(st.sampled_from([0, 0, 1, 255]))
    return RawSpec(h, w, encoding, step, length, big_endian, draw(st.integers(0, 2**32 - 1)), draw(STAMPS), defect)


def _smooth(h: int, w: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    top = np.iinfo(dtype).max
    planes = [((xx * (c + 1) + yy * 3) * top // (w * 3 + h * 3)) % (top + 1) for c in range(channels)]
    a = np.stack(planes, -1).astype(dtype)
    return a[..., 0] if channels == 1 else a


def _pil_bytes(array: np.ndarray, mode: str, fmt: str, **kw: Any) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(array).convert(mode).save(buf, fmt, **kw)
    return buf.getvalue()


def _cv(ext: str, array: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(ext, array)
    assert ok
    return enc.tobytes()


# Valid compressed images of many flavours: (format, bytes).
COMPRESSED_BASES: list[tuple[str, bytes]] = [
    ("jpeg", _cv(".jpg", _smooth(32, 40, 3))),
    ("rgb8; jpeg compressed bgr8", _cv(".jpg", _smooth(33, 48, 3))),
    ("mono8; jpeg compressed ", _cv(".jpg", _smooth(32, 32, 1))),
    ("png", _cv(".png", _smooth(32, 40, 3))),
    ("mono16; png compressed ", _cv(".png", _smooth(32, 36, 1, np.uint16))),
    ("rgb16; png compressed bgr16", _cv(".png", _smooth(34, 32, 3, np.uint16))),
    ("bayer_rggb8; png compressed ", _cv(".png", _smooth(32, 32, 1))),
    ("png", _cv(".png", _smooth(35, 33, 4))),  # BGRA
    ("png", _pil_bytes(_smooth(32, 32, 1), "LA", "PNG")),  # grey + alpha
    ("png", _pil_bytes(_smooth(32, 32, 3), "P", "PNG")),  # palette
    ("png", _pil_bytes(_smooth(32, 40, 1), "1", "PNG")),  # 1-bit
    ("jpeg", _pil_bytes(_smooth(32, 32, 3), "CMYK", "JPEG")),  # four components
    ("jpeg", _pil_bytes(_smooth(40, 48, 3), "RGB", "JPEG", progressive=True)),
]
TOO_SMALL = [("jpeg", _cv(".jpg", _smooth(8, 40, 3))), ("png", _cv(".png", _smooth(40, 31, 3)))]
COMPRESSED_DEFECTS = ["too_small", "truncate", "flip", "splice", "garbage", "empty", "wrong_codec", "bad_format",
                      "depth_format", "huge_header", "zero_header", "swap_to_other_image"]
BAD_FORMATS = ["gif", "", "jpeg compressed", "rgb8; gif compressed bgr8", "rgb8; jpeg compressed xyz8",
               "not_an_encoding; png compressed ", "16UC1; compressedDepth png", "JPEG2000", ";;", "png png"]


def _rewrite_size(data: bytes, width: int, height: int) -> bytes:
    """The same bytes with the header's declared size replaced (PNG IHDR, JPEG SOF)."""
    b = bytearray(data)
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        b[16:24] = struct.pack(">II", width, height)
        return bytes(b)
    pos = 2
    while pos + 9 < len(b):
        marker = b[pos + 1]
        (length,) = struct.unpack_from(">H", b, pos + 2)
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, pos + 5, height & 0xFFFF, width & 0xFFFF)
            return bytes(b)
        pos += 2 + length
    return bytes(b)


@st.composite
def compressed_specs(draw: st.DrawFn, valid_weight: int = 1) -> CompressedSpec:
    fmt, data = draw(st.sampled_from(COMPRESSED_BASES))
    defect = draw(st.sampled_from([None] * valid_weight + COMPRESSED_DEFECTS * 2))
    if defect == "too_small":
        fmt, data = draw(st.sampled_from(TOO_SMALL))
    b = bytearray(data)
    if defect == "truncate":
        b = b[:draw(st.integers(0, len(b) - 1))]
    elif defect == "flip":
        for _ in range(draw(st.integers(1, 16))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    elif defect == "splice":
        at = draw(st.integers(0, len(b)))
        b[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif defect == "garbage":
        b = bytearray(draw(st.binary(min_size=1, max_size=512)))
    elif defect == "empty":
        b = bytearray()
    elif defect == "wrong_codec":
        fmt = "png" if "jpeg" in fmt else "jpeg"
    elif defect == "bad_format":
        fmt = draw(st.sampled_from(BAD_FORMATS) | st.text(max_size=24))
    elif defect == "depth_format":
        fmt = "16UC1; compressedDepth png"
    elif defect == "huge_header":
        w, h = draw(st.sampled_from([(65535, 65535), (20000, 20000), (2**31 - 1, 2), (U32, U32)]))
        b = bytearray(_rewrite_size(bytes(b), w, h))
    elif defect == "zero_header":
        b = bytearray(_rewrite_size(bytes(b), draw(st.sampled_from([0, 5])), 0))
    elif defect == "swap_to_other_image":  # data of one flavour under another's format string
        fmt = draw(st.sampled_from([f for f, _ in COMPRESSED_BASES]))
    return CompressedSpec(fmt, bytes(b), draw(STAMPS), defect)


INFO_DEFECTS = ["nan", "inf", "zero_focal", "negative_focal", "zero_size", "wild"]
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=64)


@st.composite
def info_specs(draw: st.DrawFn) -> InfoSpec:
    defect = draw(st.sampled_from([None, None] + INFO_DEFECTS))
    w, h = draw(st.integers(MIN_IMAGE_SIDE_PX, 48)), draw(st.integers(MIN_IMAGE_SIDE_PX, 48))
    fx, fy = draw(st.floats(5.0, 500.0)), draw(st.floats(5.0, 500.0))
    k = [fx, 0.0, (w - 1) / 2, 0.0, fy, (h - 1) / 2, 0.0, 0.0, 1.0]
    if defect == "nan":
        k[draw(st.integers(0, 8))] = math.nan
    elif defect == "inf":
        k[draw(st.integers(0, 8))] = draw(st.sampled_from([math.inf, -math.inf]))
    elif defect == "zero_focal":
        k[draw(st.sampled_from([0, 4]))] = 0.0
    elif defect == "negative_focal":
        k[draw(st.sampled_from([0, 4]))] = -draw(st.floats(1e-6, 1e6))
    elif defect == "zero_size":
        w, h = draw(st.sampled_from([(0, h), (w, 0), (0, 0)]))
    elif defect == "wild":
        k = [draw(ANY_FLOAT | st.sampled_from([0.0, 5e-324, 1e-300, 1e300, 1.7e308])) for _ in range(9)]
        w, h = draw(st.integers(0, U32)), draw(st.integers(0, U32))
    return InfoSpec(tuple(k), w, h, draw(STAMPS), defect)


@st.composite
def mixed(draw: st.DrawFn, images: st.SearchStrategy, infos: st.SearchStrategy) -> Any:
    """Three images for every CameraInfo, roughly (st.one_of would pick its branches unevenly)."""
    return draw(infos) if draw(st.integers(0, 3)) == 3 else draw(images)


# --------------------------------------------------------------------------- decoder level


def test_raw_image_messages_decode_or_are_rejected_with_the_oracles_kind() -> None:
    tally: Counter = Counter()

    @settings(max_examples=CODEC_EXAMPLES, **SETTINGS)
    @given(spec=raw_specs())
    def check(spec: RawSpec) -> None:
        tally["messages"] += 1
        msg = spec.message()
        try:
            convert.check_image(msg)
            rgb = convert.image_rgb(msg)
        except convert.InputRejected as exc:
            assert exc.kind == spec.expected, (spec, str(exc))
            assert str(exc)  # a message naming the problem
            tally[f"rejected.{exc.kind}"] += 1
            return
        assert spec.expected is None, spec
        assert rgb.shape == (spec.height, spec.width, 3) and rgb.dtype == np.uint8
        tally["decoded"] += 1

    check()
    assert tally["messages"] >= CODEC_EXAMPLES
    record(__file__, "fuzz.decoders.image", **tally)


def test_compressed_image_messages_decode_or_are_rejected() -> None:
    tally: Counter = Counter()

    @settings(max_examples=CODEC_EXAMPLES, **SETTINGS)
    @given(spec=compressed_specs())
    def check(spec: CompressedSpec) -> None:
        tally["messages"] += 1
        msg = spec.message()
        try:
            convert.check_compressed(msg)
            rgb = convert.compressed_rgb(msg)
        except convert.InputRejected as exc:
            assert exc.kind == spec.expected and exc.kind in convert.DECODE_ERROR_KINDS, (spec.defect, str(exc))
            tally[f"rejected.{exc.kind}"] += 1
            return
        assert spec.expected is None and spec.defect not in ("empty", "bad_format", "depth_format", "huge_header",
                                                             "zero_header", "too_small"), (spec.defect, spec.format)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.size > 0
        tally["decoded"] += 1

    check()
    assert tally["messages"] >= CODEC_EXAMPLES
    record(__file__, "fuzz.decoders.compressed_image", **tally)


def test_every_undamaged_compressed_flavour_decodes() -> None:
    """The fuzzer's starting points are valid, so 'rejected' above always means the damage was seen."""
    for fmt, data in COMPRESSED_BASES:
        rgb = convert.compressed_rgb(CompressedImage(format=fmt, data=data))
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, fmt


def test_camera_info_is_refused_or_usable_for_positions() -> None:
    """An accepted CameraInfo must also be usable downstream: scaled to the image, projected to the ground."""
    from panoptic_ros.pipeline import ground_positions

    tally: Counter = Counter()

    @settings(max_examples=CODEC_EXAMPLES, **SETTINGS)
    @given(spec=info_specs(), image_w=st.integers(MIN_IMAGE_SIDE_PX, 4096),
           image_h=st.integers(MIN_IMAGE_SIDE_PX, 4096))
    def check(spec: InfoSpec, image_w: int, image_h: int) -> None:
        tally["messages"] += 1
        try:
            intrinsics = convert.camera_info_intrinsics(spec.message())
        except ValueError as exc:
            assert not spec.valid, (spec, str(exc))
            tally["rejected"] += 1
            return
        assert spec.valid, spec
        k = intrinsics if (intrinsics.width, intrinsics.height) == (image_w, image_h) else \
            intrinsics.scaled(image_w, image_h)
        camera = CameraModel(k, CameraMounting(height_m=1.5, pitch_rad=0.1))
        boxes = [np.array([0.0, 0.0, image_w, image_h], np.float32), np.array([1.0, 1.0, 2.0, 2.0], np.float32)]
        for p in ground_positions(camera, boxes):
            assert p is None or (p.shape == (3,) and np.all(np.isfinite(p)))
        tally["accepted_and_projected"] += 1

    check()
    assert tally["messages"] >= CODEC_EXAMPLES
    record(__file__, "fuzz.decoders.camera_info", **tally)


# --------------------------------------------------------------------------- the node's callbacks, in-process

NODE_PARAMS = {"model.device": "cpu", "model.score_threshold": 0.05, "model.overlap_threshold": 0.0,
               "tracker.min_hits": 1, "tracker.high_score_threshold": 0.1, "tracker.low_score_threshold": 0.05,
               "tracker.new_track_score_threshold": 0.1, "mount.height_m": 1.5, "log_throttle_s": 60.0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch


    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def context():
    """An rclpy context of our own on a random domain, discovery limited to this host."""
    with own_context() as ctx:
        yield ctx


def make_node(context: Context, model_path: Path, **params: Any):
    """The real PanopticNode class, constructed here (its worker thread running)."""
    from panoptic_ros.ros.node import PanopticNode

    values = {**NODE_PARAMS, "model.path": str(model_path), **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return PanopticNode(context=context, parameter_overrides=overrides,
                        namespace=f"/fuzz_{uuid.uuid4().hex[:8]}")


def callbacks(node: Any) -> tuple[Any, Any]:
    """The node's own subscription callbacks (image or compressed image, camera_info) of its one camera."""
    cam = node.cameras[0]
    image_sub, info_sub = cam.subs
    assert image_sub.msg_type in (Image, CompressedImage) and info_sub.msg_type is CameraInfo
    return image_sub.callback, info_sub.callback


def counter_values(node: Any) -> Counter:
    counts, _ = node.cameras[0].stats.snapshot()
    return counts


@pytest.mark.timeout(900 if FULL else 240)
@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_node_callbacks_count_every_malformed_message_by_kind(context, model_path: Path, transport: str) -> None:
    """Worker stopped: after each callback the test runs one processing cycle itself, so every message has
    exactly one fate and the counters must match the generated messages kind by kind."""
    node = make_node(context, model_path, input_transport=transport)
    try:
        node.close()  # the test drives the processing cycles from here on
        on_image, on_info = callbacks(node)
        want: Counter = Counter()
        tally: Counter = Counter()
        image_strategy = raw_specs() if transport == "raw" else compressed_specs()

        @settings(max_examples=CALLBACK_EXAMPLES, **SETTINGS)
        @given(spec=mixed(image_strategy, info_specs()))
        def feed(spec: RawSpec | CompressedSpec | InfoSpec) -> None:
            tally["messages"] += 1
            if isinstance(spec, InfoSpec):
                on_info(spec.message())  # must not raise: a callback never raises into the executor
                if not spec.valid:
                    want[diagnostics.CAMERA_INFO_INVALID] += 1
                    tally["malformed"] += 1
                return
            on_image(spec.message())
            node._cycle()
            want[diagnostics.RECEIVED] += 1
            if spec.expected is None:
                want[diagnostics.PROCESSED] += 1
            else:
                want[f"{diagnostics.DECODE_ERRORS}.{spec.expected}"] += 1
                want[diagnostics.DECODE_ERRORS] += 1
                tally["malformed"] += 1
            tally[f"defect.{spec.defect}"] += 1

        t0 = time.monotonic()
        feed()
        got = counter_values(node)
        keys = set(want) | {k for k in got if k.startswith(diagnostics.DECODE_ERRORS)}
        keys |= {diagnostics.CALLBACK_ERRORS, diagnostics.PROCESSING_ERRORS, diagnostics.DROPPED,
                 diagnostics.CAMERA_INFO_INVALID}
        assert {k: got[k] for k in sorted(keys)} == {k: want[k] for k in sorted(keys)}
        assert tally["malformed"] >= MIN_MALFORMED, tally
        assert got[diagnostics.RECEIVED] == got[diagnostics.PROCESSED] + got[diagnostics.DECODE_ERRORS]
        assert not node.cameras[0].slot.has_frame
        record(__file__, f"fuzz.callbacks.{transport}", messages=tally["messages"], malformed=tally["malformed"],
               processed=got[diagnostics.PROCESSED], seconds=round(time.monotonic() - t0, 1),
               counters={k: got[k] for k in sorted(got)}, defects={k[7:]: v for k, v in sorted(tally.items())
                                                                    if k.startswith("defect.")})
    finally:
        node.destroy_node()


@pytest.mark.timeout(600 if FULL else 180)
def test_node_counters_balance_with_the_worker_running_and_inference_toggled(context, model_path: Path) -> None:
    """As on a vehicle: callbacks from one thread, the worker processing concurrently (valid frames pile up
    and are dropped), inference switched off and on in between. Every message is accounted for exactly."""
    node = make_node(context, model_path)
    on_image, on_info = callbacks(node)
    tally: Counter = Counter()
    try:
        @settings(max_examples=CALLBACK_EXAMPLES, **SETTINGS)
        @given(spec=raw_specs(valid_weight=6))
        def feed(spec: RawSpec) -> None:
            # Every hundredth message switches inference over, on a fixed schedule (drawn toggles could
            # cluster and leave inference off, or on, for the whole run; then a path went unexercised).
            if tally["messages"] % 100 == 50:
                enabled = not node._enabled
                result = node.set_parameters([Parameter("enabled", value=enabled)])[0]
                assert result.successful, result.reason
            tally["messages"] += 1
            if node._enabled and spec.expected is not None:
                tally[f"{diagnostics.DECODE_ERRORS}.{spec.expected}"] += 1
                tally[diagnostics.DECODE_ERRORS] += 1
            on_image(spec.message())

        feed()
    finally:
        node.close()  # the worker finishes the batch in hand; nothing is in flight afterwards
    try:
        c = counter_values(node)
        pending = int(node.cameras[0].slot.has_frame)
        accounted = (c[diagnostics.PROCESSED] + c[diagnostics.DROPPED] + c[diagnostics.SKIPPED_DISABLED]
                     + c[diagnostics.DECODE_ERRORS] + c[diagnostics.PROCESSING_ERRORS]
                     + c[diagnostics.CALLBACK_ERRORS] + pending)
        assert c[diagnostics.RECEIVED] == tally["messages"] == accounted, (c, pending)
        # Raw images are judged in the callback: while enabled, each rejection is counted in its own kind.
        for key in [k for k in tally if k.startswith(diagnostics.DECODE_ERRORS)]:
            assert c[key] == tally[key], (key, c, tally)
        assert c[diagnostics.CALLBACK_ERRORS] == 0 and c[diagnostics.PROCESSING_ERRORS] == 0
        assert c[diagnostics.PROCESSED] > 0 and c[diagnostics.DROPPED] > 0 and c[diagnostics.SKIPPED_DISABLED] > 0
        record(__file__, "fuzz.callbacks.concurrent", messages=tally["messages"], pending=pending,
               counters={k: c[k] for k in sorted(c)})
    finally:
        node.destroy_node()


# --------------------------------------------------------------------------- over DDS, to a node process


MALFORMED_RAW = raw_specs(valid_weight=0).filter(lambda s: s.on_the_wire.expected is not None)


@pytest.mark.timeout(600 if FULL else 180)
def test_malformed_flood_over_dds_leaves_the_node_serving(model_path: Path, tmp_path: Path) -> None:
    """A few hundred malformed frames from another process over DDS (reliable, paced), then a good frame:
    the node answers it, and its diagnostics account for every frame it received."""
    from test_node import Diagnostics, NodeProcess, Probe, counts, image_msg, stamp_of
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from panoptic_ros.msg import PanopticObjectArray

    mp = pytest.MonkeyPatch()
    discover_locally(mp)
    domain_id = random_domain_id()
    args = [f"{k}:={v}" for k, v in NODE_PARAMS.items()] + ["input_qos:=DEFAULT", "diagnostics_period_s:=0.2"]
    node = NodeProcess(model_path, args, tmp_path / "node.log", domain_id)
    probe = Probe(domain_id)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    try:
        diag = Diagnostics(probe)
        objects = probe.inbox(PanopticObjectArray, "/panoptic/objects", reliable)
        pub = probe.publisher(Image, "/image", reliable)
        info = probe.publisher(CameraInfo, "/camera_info", reliable)
        want: Counter = Counter()
        status = "panoptic_node: camera camera"

        def caught_up() -> None:
            """Wait until the node has received everything sent so far (its own counters say so)."""
            diag.values(status, lambda v: int(v[diagnostics.RECEIVED]) == want[diagnostics.RECEIVED] and
                        int(v[diagnostics.CAMERA_INFO_RECEIVED]) == want[diagnostics.CAMERA_INFO_RECEIVED],
                        timeout_s=30)

        @settings(max_examples=DDS_MESSAGES, **SETTINGS)
        @given(spec=mixed(MALFORMED_RAW, info_specs()))
        def flood(spec: RawSpec | InfoSpec) -> None:
            if isinstance(spec, InfoSpec):
                info.publish(spec.message())
                want[diagnostics.CAMERA_INFO_RECEIVED] += 1
                want[diagnostics.CAMERA_INFO_INVALID] += int(not spec.valid)
            else:
                pub.publish(spec.message())
                want[diagnostics.RECEIVED] += 1
                want[f"{diagnostics.DECODE_ERRORS}.{spec.on_the_wire.expected}"] += 1
                want[diagnostics.DECODE_ERRORS] += 1
            # Bursts of BURST, then wait for the node to have them all: no keep-last queue (ours or the
            # node's, depth 10) ever overwrites a message, however slow the machine is.
            if (want[diagnostics.RECEIVED] + want[diagnostics.CAMERA_INFO_RECEIVED]) % BURST == 0:
                caught_up()

        flood()
        caught_up()
        assert node.process.poll() is None, node.log()[-3000:]
        good = image_msg(1, 5000.0, frame_id="fuzz_optical")
        pub.publish(good)
        served = objects.wait(lambda m: stamp_of(m) == 5000.0, 60)
        assert served is not None, node.log()[-3000:]
        assert served.header.frame_id == "fuzz_optical"
        want[diagnostics.RECEIVED] += 1
        want[diagnostics.PROCESSED] += 1
        keys = sorted(want) + [diagnostics.CALLBACK_ERRORS, diagnostics.PROCESSING_ERRORS]
        values = diag.values("panoptic_node: camera camera",
                             lambda v: int(v[diagnostics.PROCESSED]) >= 1 and int(v[diagnostics.RECEIVED])
                             == want[diagnostics.RECEIVED], timeout_s=30)
        got = counts(values, *keys)
        assert got == {k: want[k] for k in keys}, (got, dict(want))
        record(__file__, "fuzz.dds", malformed_images_sent=want[diagnostics.RECEIVED] - 1,
               camera_info_sent=want[diagnostics.CAMERA_INFO_RECEIVED],
               received=got[diagnostics.RECEIVED], decode_errors=got[diagnostics.DECODE_ERRORS],
               camera_info_invalid=got[diagnostics.CAMERA_INFO_INVALID], good_frame_served=True)
    finally:
        probe.close()
        node.stop()
        mp.undo()


def test_oracle_agrees_with_hand_made_cases() -> None:
    """The oracle itself: one obvious case per kind (a broken oracle would make the fuzz tests meaningless)."""
    assert expected_raw_kind(32, 40, "rgb8", 120, 3840) is None
    assert expected_raw_kind(32, 40, "rgb8", 128, 4096) is None  # padded rows
    assert expected_raw_kind(0, 40, "rgb8", 120, 0) == convert.SIZE
    assert expected_raw_kind(31, 40, "rgb8", 120, 3720) == convert.SIZE
    assert expected_raw_kind(8001, 8001, "mono8", 8001, 0) == convert.SIZE
    assert expected_raw_kind(32, 40, "RGB8", 120, 3840) == convert.ENCODING
    assert expected_raw_kind(32, 40, "32FC1", 160, 5120) == convert.ENCODING
    assert expected_raw_kind(32, 40, "rgb8", 119, 3808) == convert.LAYOUT
    assert expected_raw_kind(32, 40, "rgb8", 120, 3839) == convert.LAYOUT
    assert expected_raw_kind(32, 41, "yuv422", 82, 2624) == convert.LAYOUT
