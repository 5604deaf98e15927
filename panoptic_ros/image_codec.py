"""Image codecs for ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` without cv_bridge.

ROS 2's ``cv_bridge`` is neither on PyPI nor on this machine, and the pure core
must not import ROS, so conversion works on the plain message fields
(height, width, encoding, step, data, is_bigendian). The ROS layer and the
rosbag readers (rclpy and ``rosbags`` messages) pass those fields through thin
glue.

Semantics follow ROS 2's ``sensor_msgs/image_encodings.hpp`` and ``cv_bridge``:

* ``yuv422`` is UYVY byte order (U0 Y0 V0 Y1), ``yuv422_yuy2`` is YUYV
  (Y0 U0 Y1 V0); ``uyvy`` and ``yuyv`` are their current names. Decoded raw,
  they are (H, W, 2) uint8 arrays like cv_bridge's ``CV_8UC2``; colour
  conversion is OpenCV's BT.601 limited-range formula (luma below 16 clipped).
* Bayer names say the colours of the top-left 2x2 block: ``bayer_rggb8`` has
  red at (0, 0). OpenCV names its codes after the block at (1, 1), so
  ``bayer_rggb`` is ``COLOR_BayerBG2RGB``, ``bayer_bggr`` is ``BayerRG``,
  ``bayer_gbrg`` is ``BayerGR`` and ``bayer_grbg`` is ``BayerGB`` (the table
  cv_bridge uses, checked on synthetic mosaics in test/test_image_codec.py).
* Generic OpenCV types ``(8|16|32|64)(U|S|F)C(1..4)`` are decoded as such;
  for colour conversion ``8UC3``/``8UC4`` count as BGR/BGRA (OpenCV's order).
* ``step`` may exceed the row size (padding is skipped without a copy);
  ``is_bigendian`` is honoured for multi-byte encodings (swapped to native).
* ``len(data)`` must equal ``height * step`` exactly, as cv_bridge requires:
  shorter data is truncated, longer data means the fields disagree with the
  buffer, and guessing which field is wrong would hide a broken driver.

Bad input raises :class:`ImageDecodeError` whose message names the field and
its value; nothing here segfaults, hangs, or allocates more than the decoded
image (sizes are checked against ``max_pixels`` before any allocation, and
compressed images are measured from their PNG IHDR / JPEG SOF header before
they are decompressed).
"""
from __future__ import annotations

import operator
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple, Union

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest accepted height * width (a 64-MP frame; 8K video is 33 MP)."""

BytesLike = Union[bytes, bytearray, memoryview, np.ndarray]


class ImageDecodeError(ValueError):
    """An image message (raw or compressed) that cannot be decoded; the message says why."""


class ImageEncodeError(ValueError):
    """An array that cannot be written in the requested encoding or format."""


# --------------------------------------------------------------------------- encodings


@dataclass(frozen=True)
class EncodingInfo:
    """What one ``sensor_msgs/Image`` encoding string means for the bytes of a row.

    ``kind`` is the colour layout: rgb, bgr, rgba, bgra, mono, bayer_rggb,
    bayer_bggr, bayer_gbrg, bayer_grbg, uyvy, yuyv, or generic (an OpenCV
    matrix type without colour meaning).
    """

    name: str
    kind: str
    channels: int
    dtype: np.dtype  # of one channel, native byte order

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.dtype.itemsize


def _named_encodings() -> dict[str, EncodingInfo]:
    u8, u16 = np.dtype(np.uint8), np.dtype(np.uint16)
    table: dict[str, EncodingInfo] = {}

    def add(name: str, kind: str, channels: int, dtype: np.dtype) -> None:
        table[name] = EncodingInfo(name, kind, channels, dtype)

    for bits, dt in (("8", u8), ("16", u16)):
        add("rgb" + bits, "rgb", 3, dt)
        add("bgr" + bits, "bgr", 3, dt)
        add("rgba" + bits, "rgba", 4, dt)
        add("bgra" + bits, "bgra", 4, dt)
        add("mono" + bits, "mono", 1, dt)
        for pattern in ("rggb", "bggr", "gbrg", "grbg"):
            add(f"bayer_{pattern}{bits}", f"bayer_{pattern}", 1, dt)
    for name in ("uyvy", "yuv422"):
        add(name, "uyvy", 2, u8)
    for name in ("yuyv", "yuv422_yuy2"):
        add(name, "yuyv", 2, u8)
    return table


_GENERIC_DTYPES = {
    "8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16,
    "32S": np.int32, "32F": np.float32, "64F": np.float64,
}


def _generic_encodings() -> dict[str, EncodingInfo]:
    table = {}
    for prefix, dt in _GENERIC_DTYPES.items():
        for channels in (1, 2, 3, 4):
            name = f"{prefix}C{channels}"
            table[name] = EncodingInfo(name, "generic", channels, np.dtype(dt))
    return table


_ENCODINGS: dict[str, EncodingInfo] = {**_named_encodings(), **_generic_encodings()}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

# ROS names the 2x2 block at (0, 0); OpenCV the block at (1, 1).
_BAYER_TO_RGB = {
    "bayer_rggb": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg": cv2.COLOR_BayerGB2RGB,
}
_YUV_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
_KNOWN_BUT_UNSUPPORTED = {
    "nv12": "planar YUV 4:2:0", "nv21": "planar YUV 4:2:0", "nv24": "planar YUV 4:4:4",
}


def describe_encoding(encoding: str) -> EncodingInfo:
    """The layout of ``encoding``; raises ImageDecodeError for an unknown one."""
    if not isinstance(encoding, str):
        raise ImageDecodeError(f"encoding must be a string, got {type(encoding).__name__} {encoding!r}")
    info = _ENCODINGS.get(encoding)
    if info is not None:
        return info
    if encoding in _KNOWN_BUT_UNSUPPORTED:
        raise ImageDecodeError(
            f"encoding {encoding!r} ({_KNOWN_BUT_UNSUPPORTED[encoding]}) is not supported; "
            "publish uyvy, yuyv, rgb8 or bgr8 instead")
    hint = ""
    for candidate in (encoding.strip(), encoding.lower(), encoding.strip().lower(),
                      encoding.upper().replace("CV_", "")):
        if candidate in _ENCODINGS:
            hint = f" (encodings are exact and case-sensitive; did you mean {candidate!r}?)"
            break
    if not encoding:
        hint = " (the encoding field is empty: the publisher did not set it)"
    raise ImageDecodeError(
        f"unknown image encoding {encoding!r}{hint}; supported: rgb8, bgr8, rgba8, bgra8, mono8, "
        "mono16, rgb16, bgr16, rgba16, bgra16, bayer_{rggb,bggr,gbrg,grbg}{8,16}, yuv422/uyvy, "
        "yuv422_yuy2/yuyv and the OpenCV types (8U|8S|16U|16S|32S|32F|64F)C(1..4)")


# --------------------------------------------------------------------------- raw images


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` (header aside), ready to copy into a message."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int  # bytes per row, padding included
    data: bytes | memoryview | np.ndarray  # height * step bytes


def _as_size(name: str, value: object, minimum: int = 1) -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ImageDecodeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if number < minimum:
        raise ImageDecodeError(f"{name} must be >= {minimum}, got {number} (an empty image cannot be decoded)")
    return number


def _byte_view(data: object, what: str = "data") -> np.ndarray:
    """A 1-D uint8 view of any contiguous buffer (bytes, array.array, memoryview, ndarray); no copy."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8 and data.ndim == 1:
            return data
        if not data.flags.c_contiguous:
            raise ImageDecodeError(f"{what} must be a contiguous buffer, got a strided {data.dtype} array {data.shape}")
        return data.reshape(-1).view(np.uint8)
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise ImageDecodeError(
            f"{what} must be bytes-like (bytes, array.array, memoryview, numpy array), "
            f"got {type(data).__name__}") from None
    if not view.c_contiguous:
        raise ImageDecodeError(f"{what} must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError as exc:
            raise ImageDecodeError(f"{what} must be a plain byte buffer, got format {view.format!r}: {exc}") from None
    return np.frombuffer(view, dtype=np.uint8)


@dataclass(frozen=True)
class _Layout:
    info: EncodingInfo
    height: int
    width: int
    step: int
    buffer: np.ndarray  # uint8, exactly height * step bytes


def _check_layout(height: object, width: object, encoding: object, step: object, data: object,
                  max_pixels: int) -> _Layout:
    info = describe_encoding(encoding)  # type: ignore[arg-type]
    h = _as_size("height", height)
    w = _as_size("width", width)
    s = _as_size("step", step)
    if h * w > max_pixels:
        raise ImageDecodeError(
            f"image of {w}x{h} = {h * w} pixels exceeds the limit of {max_pixels} pixels "
            "(raise max_pixels if such frames are real)")
    row_bytes = w * info.bytes_per_pixel
    if s < row_bytes:
        raise ImageDecodeError(
            f"step {s} is smaller than one row of {w} {encoding} pixels ({w} * {info.bytes_per_pixel} = "
            f"{row_bytes} bytes); step must be >= width * bytes per pixel")
    if info.kind in ("uyvy", "yuyv") and w % 2:
        raise ImageDecodeError(
            f"width {w} is odd, but {encoding} packs two pixels per 4 bytes; YUV 4:2:2 needs an even width")
    buffer = _byte_view(data)
    expected = h * s
    if buffer.size != expected:
        problem, cause = (("shorter", "a truncated message or wrong height/step fields") if buffer.size < expected
                          else ("longer", "height/step disagree with the buffer; ROS requires exactly height * step"))
        raise ImageDecodeError(
            f"data is {problem} than height * step: {buffer.size} bytes, expected {h} * {s} = {expected} ({cause})")
    return _Layout(info, h, w, s, buffer)


def _view(layout: _Layout, is_bigendian: bool) -> np.ndarray:
    """(H, W) or (H, W, C) array over the buffer, rows ``step`` apart; copies only to byte-swap."""
    info = layout.info
    dtype = info.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    if info.channels == 1:
        shape: tuple[int, ...] = (layout.height, layout.width)
        strides: tuple[int, ...] = (layout.step, dtype.itemsize)
    else:
        shape = (layout.height, layout.width, info.channels)
        strides = (layout.step, info.bytes_per_pixel, dtype.itemsize)
    array = np.ndarray(shape, dtype=dtype, buffer=layout.buffer, offset=0, strides=strides)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def image_to_numpy(height: int, width: int, encoding: str, step: int, data: BytesLike,
                   is_bigendian: bool = False, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of a raw image as stored: (H, W) for one channel, (H, W, C) otherwise.

    No colour conversion: ``bgr8`` stays BGR, ``bayer_*`` stays a mosaic,
    ``yuv422`` is (H, W, 2) uint8. The result is a view of ``data`` (read-only
    when ``data`` is bytes) unless the bytes had to be swapped to native
    order; copy it to keep it beyond the message's lifetime or to write to it.
    """
    layout = _check_layout(height, width, encoding, step, data, max_pixels)
    return _view(layout, bool(is_bigendian))


def _cv_ready(array: np.ndarray) -> np.ndarray:
    """OpenCV takes padded rows, but not a row step that is no multiple of the element size."""
    if array.strides[0] % array.itemsize or not array.flags.aligned:
        return np.ascontiguousarray(array)
    return array


def _scale_16_to_8(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 rounded to nearest (v / 257), as cv_bridge scales mono16 -> mono8."""
    return ((array.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)


def image_to_rgb(height: int, width: int, encoding: str, step: int, data: BytesLike,
                 is_bigendian: bool = False, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any colour, mono, Bayer or YUV 4:2:2 image as (H, W, 3) uint8 RGB, what the model eats.

    Debayers ``bayer_*`` (bilinear), converts YUV 4:2:2 (BT.601), swaps BGR,
    drops alpha, repeats mono into three channels, and scales 16-bit values
    to 8 bits (v / 257). ``rgb8`` comes back as a view of ``data`` (no copy,
    possibly read-only or strided); everything else is a new contiguous array.
    Float and signed encodings carry no colour and raise ImageDecodeError.
    """
    layout = _check_layout(height, width, encoding, step, data, max_pixels)
    info = layout.info
    kind = info.kind
    if kind == "generic":
        if info.dtype not in (np.uint8, np.uint16) or info.channels == 2:
            raise ImageDecodeError(
                f"encoding {encoding!r} holds {info.channels}-channel {info.dtype} values, not colours; "
                "use image_to_numpy for it")
        kind = {1: "mono", 3: "bgr", 4: "bgra"}[info.channels]
    pixels = _view(layout, bool(is_bigendian))
    if kind in _BAYER_TO_RGB:
        rgb = cv2.cvtColor(_cv_ready(pixels), _BAYER_TO_RGB[kind])
        return _scale_16_to_8(rgb) if rgb.dtype == np.uint16 else rgb
    if kind in _YUV_TO_RGB:
        return cv2.cvtColor(_cv_ready(pixels), _YUV_TO_RGB[kind])
    if pixels.dtype == np.uint16:
        pixels = _scale_16_to_8(pixels)
    if kind == "rgb":
        return pixels
    code = {"bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB,
            "mono": cv2.COLOR_GRAY2RGB}[kind]
    return cv2.cvtColor(_cv_ready(pixels), code)


def numpy_to_image(array: np.ndarray, encoding: str, *, step: int | None = None,
                   is_bigendian: bool = False) -> RawImage:
    """An array in ``encoding``'s layout (as :func:`image_to_numpy` returns it) as Image fields.

    ``step`` defaults to the row size; a larger one pads every row with zero
    bytes. The array's dtype and channel count must match the encoding
    exactly (no silent casts): ``rgb8`` wants (H, W, 3) uint8, ``32FC1``
    (H, W) or (H, W, 1) float32, ``yuv422`` (H, W, 2) uint8 with an even W.
    """
    try:
        info = describe_encoding(encoding)
    except ImageDecodeError as exc:
        raise ImageEncodeError(str(exc)) from None
    array = np.asarray(array)
    if array.ndim == 3 and info.channels == 1 and array.shape[2] == 1:
        array = array[:, :, 0]
    want_ndim = 2 if info.channels == 1 else 3
    if array.ndim != want_ndim or (want_ndim == 3 and array.shape[2] != info.channels):
        want = "(H, W)" if info.channels == 1 else f"(H, W, {info.channels})"
        raise ImageEncodeError(f"encoding {encoding!r} needs a {want} array, got shape {array.shape}")
    if array.dtype != info.dtype:
        raise ImageEncodeError(
            f"encoding {encoding!r} needs dtype {info.dtype}, got {array.dtype}; convert the array first")
    height, width = int(array.shape[0]), int(array.shape[1])
    if height < 1 or width < 1:
        raise ImageEncodeError(f"cannot encode an empty image of shape {array.shape}")
    if info.kind in ("uyvy", "yuyv") and width % 2:
        raise ImageEncodeError(f"{encoding} packs two pixels per 4 bytes; width {width} is odd")
    row_bytes = width * info.bytes_per_pixel
    if step is None:
        step = row_bytes
    step = operator.index(step)
    if step < row_bytes:
        raise ImageEncodeError(f"step {step} is smaller than a row of {row_bytes} bytes")
    target = info.dtype.newbyteorder(">" if is_bigendian else "<") if info.dtype.itemsize > 1 else info.dtype
    rows = np.ascontiguousarray(array, dtype=target).reshape(height, row_bytes // target.itemsize)
    if step == row_bytes:
        data = rows.tobytes()
    else:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows.view(np.uint8)
        data = padded.tobytes()
    return RawImage(height=height, width=width, encoding=encoding,
                    is_bigendian=bool(is_bigendian and info.dtype.itemsize > 1), step=step, data=data)


# --------------------------------------------------------------------------- compressed images


class CompressedImageData(NamedTuple):
    """``sensor_msgs/CompressedImage`` fields: ``format`` as image_transport writes it, and the bytes."""

    format: str
    data: bytes


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``: the codec, the source encoding and the stored channel order."""

    codec: str  # "jpeg" or "png"
    source_encoding: str | None  # encoding of the Image that was compressed, when the format names it
    stored_rgb: bool  # True when the compressed channels are R, G, B (not OpenCV's B, G, R)


_CODEC_NAMES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_FORMAT_RE = re.compile(r"^\s*([^;]*?)\s*;\s*(jpeg|png)\s+compressed\s*(\S*)\s*$", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the markers carrying the frame size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """Reads ``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``, ``"16UC1; png compressed "`` ..."""
    if not isinstance(fmt, str):
        raise ImageDecodeError(f"format must be a string, got {type(fmt).__name__} {fmt!r}")
    plain = fmt.strip().lower()
    if plain in _CODEC_NAMES:
        return CompressedFormat(_CODEC_NAMES[plain], None, False)
    if "compresseddepth" in plain:
        raise ImageDecodeError(
            f"format {fmt!r} is compressed_depth_image_transport's (a 12-byte depth header before the PNG); "
            "it is not supported: subscribe to the raw depth image")
    match = _FORMAT_RE.match(fmt)
    if match is None:
        raise ImageDecodeError(
            f"unknown compressed image format {fmt!r}; expected 'jpeg', 'png' or image_transport's "
            "'<encoding>; jpeg compressed <bgr8|rgb8>' / '<encoding>; png compressed [<bgr8|bgr16|rgb8|rgb16>]'")
    source, codec, target = match.group(1), match.group(2).lower(), match.group(3).lower()
    if source:
        describe_encoding(source)
    if target and target not in ("bgr8", "bgr16", "rgb8", "rgb16"):
        raise ImageDecodeError(f"format {fmt!r} names compressed channel order {target!r}; "
                               "expected bgr8, bgr16, rgb8 or rgb16")
    return CompressedFormat(codec, source or None, target.startswith("rgb"))


def _probe_png(data: np.ndarray) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG standard requires first."""
    if data.size < 33 or bytes(data[:8]) != _PNG_SIGNATURE:
        raise ImageDecodeError(f"data is not a PNG: it starts with {bytes(data[:8])!r} ({data.size} bytes)")
    length, kind = struct.unpack(">I4s", bytes(data[8:16]))
    if kind != b"IHDR" or length != 13:
        raise ImageDecodeError(f"corrupt PNG: first chunk is {kind!r} of {length} bytes, expected a 13-byte IHDR")
    width, height = struct.unpack(">II", bytes(data[16:24]))
    return width, height


def _probe_jpeg(data: np.ndarray) -> tuple[int, int, int]:
    """(width, height, components) from the SOF marker; also checks that a scan and the end marker exist."""
    raw = memoryview(data)
    if data.size < 4 or raw[:2] != b"\xff\xd8":
        raise ImageDecodeError(f"data is not a JPEG: it starts with {bytes(raw[:4])!r} ({data.size} bytes)")
    pos, frame = 2, None
    while True:
        if pos + 4 > data.size:
            raise ImageDecodeError("corrupt or truncated JPEG: no start-of-scan marker in its headers")
        if raw[pos] != 0xFF:
            raise ImageDecodeError(f"corrupt JPEG: expected a marker at byte {pos}, found 0x{raw[pos]:02x}")
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker == 0xD9:
            raise ImageDecodeError("corrupt JPEG: end-of-image marker before any scan")
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        if length < 2:
            raise ImageDecodeError(f"corrupt JPEG: segment 0x{marker:02x} has length {length}")
        if marker in _JPEG_SOF:
            if pos + 10 > data.size:
                raise ImageDecodeError("truncated JPEG: frame header cut short")
            height, width, components = struct.unpack_from(">HHB", raw, pos + 5)
            frame = (width, height, components)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + length
    if frame is None:
        raise ImageDecodeError("corrupt JPEG: no frame header (SOF marker) before the scan")
    # In entropy-coded data 0xFF is always followed by 0x00 or a restart marker,
    # so an FF D9 after the scan header can only be the end-of-image marker.
    if data[pos:].tobytes().rfind(b"\xff\xd9") < 0:
        raise ImageDecodeError(f"truncated JPEG: no end-of-image marker in its {data.size} bytes")
    return frame


def compressed_to_numpy(format: str, data: BytesLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A ``CompressedImage`` as pixels: (H, W, 3) RGB for colour, (H, W) for mono, dtype as stored.

    JPEG gives uint8; PNG gives uint8 or uint16 (``16UC1; png compressed``
    depth stays uint16). Alpha is dropped. A Bayer source encoding
    (``bayer_rggb8; png compressed``) is demosaiced to RGB. The size in the
    file header is checked against ``max_pixels`` before decompressing, so a
    small file claiming a huge image is refused without allocating it.
    """
    parsed = parse_compressed_format(format)
    buffer = _byte_view(data)
    if parsed.codec == "png":
        width, height = _probe_png(buffer)
        flags = cv2.IMREAD_UNCHANGED
    else:
        width, height, components = _probe_jpeg(buffer)
        # The pixel grid must stay the sensor's: never apply an EXIF rotation.
        flags = (cv2.IMREAD_COLOR if components >= 3 else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{parsed.codec} header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{parsed.codec} header declares {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; refusing to decompress it")
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ImageDecodeError(f"corrupt {parsed.codec} data ({buffer.size} bytes): {exc}") from None
    if image is None:
        raise ImageDecodeError(f"corrupt or truncated {parsed.codec} data ({buffer.size} bytes): OpenCV cannot decode it")
    if image.shape[:2] != (height, width):
        raise ImageDecodeError(f"{parsed.codec} decoded to {image.shape[1]}x{image.shape[0]}, "
                               f"but its header says {width}x{height}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        if parsed.source_encoding and parsed.source_encoding.startswith("bayer_"):
            kind = describe_encoding(parsed.source_encoding).kind
            return cv2.cvtColor(image, _BAYER_TO_RGB[kind])
        return image
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if parsed.stored_rgb:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_COMPRESSIBLE = {  # encoding -> (channels, dtype)
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgb16": (3, np.uint16), "bgr16": (3, np.uint16),
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
}


def numpy_to_compressed(array: np.ndarray, fmt: str = "jpeg", quality: int = 90, *,
                        encoding: str | None = None) -> CompressedImageData:
    """Compresses (H, W) mono or (H, W, 3) RGB pixels the way image_transport's compressed plugin does.

    Returns the format string a ROS subscriber expects (``"rgb8; jpeg
    compressed bgr8"``, ``"mono16; png compressed "``) and the file bytes.
    ``encoding`` names the array's layout when the default guess (rgb8 /
    rgb16 for 3 channels, mono8 / mono16 for one) is wrong, e.g. ``bgr8``
    or ``16UC1``. ``quality`` (1..100) applies to JPEG; 16-bit needs PNG.
    """
    codec = _CODEC_NAMES.get(str(fmt).strip().lower())
    if codec is None:
        raise ImageEncodeError(f"unknown compression format {fmt!r}; use 'jpeg' or 'png'")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else 0)
    if channels not in (1, 3) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageEncodeError(f"can compress (H, W) or (H, W, 3) images, got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageEncodeError(f"can compress uint8 or uint16 pixels, got {array.dtype}")
    if encoding is None:
        bits = "8" if array.dtype == np.uint8 else "16"
        encoding = ("rgb" if channels == 3 else "mono") + bits
    if _COMPRESSIBLE.get(encoding) != (channels, array.dtype):
        raise ImageEncodeError(
            f"encoding {encoding!r} does not describe a {array.dtype} array of shape {array.shape}; "
            f"compressible: {', '.join(_COMPRESSIBLE)}")
    if codec == "jpeg" and array.dtype != np.uint8:
        raise ImageEncodeError(f"JPEG holds 8-bit pixels; compress {encoding} with fmt='png'")
    quality = operator.index(quality)
    if not 1 <= quality <= 100:
        raise ImageEncodeError(f"JPEG quality must lie in 1..100, got {quality}")
    target = ""
    if channels == 3:
        target = "bgr8" if array.dtype == np.uint8 else "bgr16"
        if encoding.startswith("rgb"):
            array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, encoded = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, encoded = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ImageEncodeError(f"OpenCV could not encode a {array.dtype} {array.shape} array as {codec}")
    return CompressedImageData(f"{encoding}; {codec} compressed {target}", encoded.tobytes())
