"""Image codecs without cv_bridge: every encoding, padding, byte order, colour conversion, bad input."""
from __future__ import annotations

import array
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panoptic_ros import image_codec as ic
from panoptic_ros.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    ImageEncodeError,
    compressed_to_numpy,
    describe_encoding,
    image_to_numpy,
    image_to_rgb,
    numpy_to_compressed,
    numpy_to_image,
)

RNG_SEED = 20261129


def _random_pixels(encoding: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    info = describe_encoding(encoding)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == "f":
        values = rng.normal(0.0, 1000.0, size=shape).astype(info.dtype)
        values.flat[0] = np.inf  # special values must survive too
        values.flat[-1] = -0.0
        return values
    limits = np.iinfo(info.dtype)
    return rng.integers(limits.min, limits.max, size=shape, endpoint=True, dtype=info.dtype)


def _pack(pixels: np.ndarray, step: int, big_endian: bool, pad_byte: int) -> bytes:
    """Row bytes as a ROS publisher writes them, built independently of the codec under test."""
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = []
    for row in pixels:
        raw = row.astype(dtype).tobytes()
        rows.append(raw + bytes([pad_byte]) * (step - len(raw)))
    return b"".join(rows)


def _sizes_for(encoding: str) -> list[tuple[int, int]]:
    if describe_encoding(encoding).kind in ("uyvy", "yuyv"):
        return [(5, 8), (17, 34), (1, 2)]
    return [(5, 7), (17, 33), (1, 1)]


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_decodes_padded_rows_and_both_byte_orders(encoding: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    info = describe_encoding(encoding)
    for height, width in _sizes_for(encoding):
        row_bytes = width * info.bytes_per_pixel
        for padding in (0, 3, 64):
            for big_endian in (False, True):
                pixels = _random_pixels(encoding, height, width, rng)
                step = row_bytes + padding
                data = _pack(pixels, step, big_endian, pad_byte=0xA5)  # garbage padding must be skipped
                decoded = image_to_numpy(height, width, encoding, step, data, big_endian)
                assert decoded.dtype == info.dtype and decoded.dtype.isnative
                np.testing.assert_array_equal(decoded, pixels, strict=True)

                # The encoder writes exactly what a ROS publisher would (zero padding).
                raw = numpy_to_image(pixels, encoding, step=step, is_bigendian=big_endian)
                assert (raw.height, raw.width, raw.encoding, raw.step) == (height, width, encoding, step)
                assert raw.is_bigendian == (big_endian and info.dtype.itemsize > 1)
                assert raw.data == _pack(pixels, step, big_endian, pad_byte=0)


def test_decoding_native_bytes_is_a_view_not_a_copy() -> None:
    pixels = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    buffer = bytearray(_pack(pixels, 40, big_endian=False, pad_byte=0))
    decoded = image_to_numpy(6, 10, "rgb8", 40, buffer)
    assert np.shares_memory(decoded, np.frombuffer(buffer, np.uint8))
    buffer[40 + 3] = 250  # row 1, pixel 1, red
    assert decoded[1, 1, 0] == 250
    assert image_to_rgb(6, 10, "rgb8", 40, buffer).base is not None  # rgb8 -> RGB: still no copy


@pytest.mark.parametrize("container", ["bytes", "bytearray", "memoryview", "array", "ndarray"])
def test_data_may_come_from_rclpy_rosbags_or_plain_python(container: str) -> None:
    pixels = np.arange(4 * 5, dtype=np.uint16).reshape(4, 5) * 1000
    data = _pack(pixels, 12, big_endian=False, pad_byte=1)
    wrapped = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data),
               "array": array.array("B", data), "ndarray": np.frombuffer(data, np.uint8)}[container]
    np.testing.assert_array_equal(image_to_numpy(4, 5, "16UC1", 12, wrapped), pixels)


# --------------------------------------------------------------------------- colour conversion

_BAYER_LAYOUT = {  # colour at (0,0), (0,1), (1,0), (1,1)
    "rggb": "RGGB", "bggr": "BGGR", "gbrg": "GBRG", "grbg": "GRBG",
}


def _mosaic(pattern: str, rgb: tuple[int, int, int], height: int, width: int, dtype: type) -> np.ndarray:
    value = dict(zip("RGB", rgb))
    layout = _BAYER_LAYOUT[pattern]
    mosaic = np.zeros((height, width), dtype)
    mosaic[0::2, 0::2] = value[layout[0]]
    mosaic[0::2, 1::2] = value[layout[1]]
    mosaic[1::2, 0::2] = value[layout[2]]
    mosaic[1::2, 1::2] = value[layout[3]]
    return mosaic


@pytest.mark.parametrize("pattern", sorted(_BAYER_LAYOUT))
@pytest.mark.parametrize("size", [(8, 10), (5, 7)])
def test_debayer_of_a_uniform_scene_gives_its_colour(pattern: str, size: tuple[int, int]) -> None:
    height, width = size
    colour = (200, 100, 30)  # R, G, B all different: a wrong pattern table swaps them
    mosaic = _mosaic(pattern, colour, height, width, np.uint8)
    rgb = image_to_rgb(height, width, f"bayer_{pattern}8", width + 5, _pack(mosaic, width + 5, False, 0))
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    assert np.all(rgb == colour), np.unique(rgb.reshape(-1, 3), axis=0)

    mosaic16 = _mosaic(pattern, tuple(c * 257 for c in colour), height, width, np.uint16)
    step = 2 * width + 3  # odd padding: rows are not 2-byte aligned
    rgb16 = image_to_rgb(height, width, f"bayer_{pattern}16", step, _pack(mosaic16, step, True, 0), True)
    assert np.all(rgb16 == colour)


def _bt601_rgb(y: float, u: float, v: float) -> np.ndarray:
    """ITU-R BT.601 limited range; luma below black (16) is clipped to black, as OpenCV does."""
    luma = 1.164 * max(y - 16.0, 0.0)
    red = luma + 1.596 * (v - 128)
    green = luma - 0.391 * (u - 128) - 0.813 * (v - 128)
    blue = luma + 2.018 * (u - 128)
    return np.clip(np.array([red, green, blue]), 0, 255)


def test_yuv422_known_values_follow_bt601_in_both_byte_orders() -> None:
    levels = [0, 16, 50, 128, 200, 235, 255]
    pixels = [(y0, y1, u, v) for y0 in levels for y1 in (16, 180) for u in (16, 128, 240) for v in (16, 128, 240)]
    width = 2 * len(pixels)
    uyvy = bytes(b for y0, y1, u, v in pixels for b in (u, y0, v, y1))
    yuyv = bytes(b for y0, y1, u, v in pixels for b in (y0, u, y1, v))
    expected = np.array([_bt601_rgb(y, u, v) for y0, y1, u, v in pixels for y in (y0, y1)])
    for encoding, data in (("yuv422", uyvy), ("uyvy", uyvy), ("yuv422_yuy2", yuyv), ("yuyv", yuyv)):
        rgb = image_to_rgb(1, width, encoding, 2 * width, data)
        assert rgb.shape == (1, width, 3)
        np.testing.assert_allclose(rgb[0].astype(float), expected, atol=1.0, err_msg=encoding)
    # Mid grey: Y = 128, U = V = 128 -> 1.164 * 112 = 130.4.
    assert image_to_rgb(1, 2, "yuv422", 4, bytes([128, 128, 128, 128]))[0, 0].tolist() == [130, 130, 130]


def test_colour_encodings_all_convert_to_the_same_rgb() -> None:
    rng = np.random.default_rng(RNG_SEED)
    rgb = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(9, 13, 1), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    cases = {
        "rgb8": rgb, "bgr8": bgr, "8UC3": bgr,
        "rgba8": np.concatenate([rgb, alpha], 2), "bgra8": np.concatenate([bgr, alpha], 2),
        "8UC4": np.concatenate([bgr, alpha], 2),
        "rgb16": rgb.astype(np.uint16) * 257, "bgr16": bgr.astype(np.uint16) * 257,
        "rgba16": np.concatenate([rgb, alpha], 2).astype(np.uint16) * 257,
        "bgra16": np.concatenate([bgr, alpha], 2).astype(np.uint16) * 257,
    }
    for encoding, pixels in cases.items():
        raw = numpy_to_image(pixels, encoding, step=None)
        out = image_to_rgb(raw.height, raw.width, raw.encoding, raw.step, raw.data, raw.is_bigendian)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)
    grey = rgb[:, :, 1]
    for encoding, pixels in (("mono8", grey), ("8UC1", grey), ("mono16", grey.astype(np.uint16) * 257),
                             ("16UC1", grey.astype(np.uint16) * 257)):
        raw = numpy_to_image(pixels, encoding)
        out = image_to_rgb(raw.height, raw.width, raw.encoding, raw.step, raw.data)
        np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2), err_msg=encoding)


def test_16_bit_scales_to_8_bit_by_rounding_v_over_257() -> None:
    values = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535]], dtype=np.uint16)
    raw = numpy_to_image(values, "mono16", is_bigendian=True)
    out = image_to_rgb(1, 8, "mono16", raw.step, raw.data, True)
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 1, 2, 128, 255]


@pytest.mark.parametrize("encoding", ["32FC1", "64FC1", "32SC1", "16SC1", "8SC3", "8UC2"])
def test_rgb_conversion_refuses_non_colour_encodings(encoding: str) -> None:
    info = describe_encoding(encoding)
    data = bytes(2 * 3 * info.bytes_per_pixel)
    with pytest.raises(ImageDecodeError, match=f"encoding '{encoding}' holds .* not colours"):
        image_to_rgb(2, 3, encoding, 3 * info.bytes_per_pixel, data)
    assert image_to_numpy(2, 3, encoding, 3 * info.bytes_per_pixel, data).shape[:2] == (2, 3)


# --------------------------------------------------------------------------- malformed raw images

_MALFORMED = [
    # (height, width, encoding, step, data, is_bigendian), message fragment
    ((5, 7, "rgb9", 21, bytes(105)), "unknown image encoding 'rgb9'"),
    ((5, 7, "", 21, bytes(105)), "encoding field is empty"),
    ((5, 7, "RGB8", 21, bytes(105)), "did you mean 'rgb8'"),
    ((5, 7, "nv12", 7, bytes(53)), "'nv12' (planar YUV 4:2:0) is not supported"),
    ((5, 7, None, 21, bytes(105)), "encoding must be a string"),
    ((5, 7, "rgb8", 20, bytes(100)), "step 20 is smaller than one row of 7 rgb8 pixels"),
    ((5, 7, "32FC1", 27, bytes(135)), "step 27 is smaller than one row of 7 32FC1 pixels (7 * 4 = 28"),
    ((5, 7, "rgb8", 21, bytes(104)), "data is shorter than height * step: 104 bytes, expected 5 * 21 = 105"),
    ((5, 7, "rgb8", 21, bytes(106)), "data is longer than height * step: 106 bytes, expected 5 * 21 = 105"),
    ((5, 7, "rgb8", 21, b""), "data is shorter"),
    ((0, 7, "rgb8", 21, b""), "height must be >= 1, got 0"),
    ((5, 0, "rgb8", 0, b""), "width must be >= 1, got 0"),
    ((5, -3, "rgb8", 21, bytes(105)), "width must be >= 1, got -3"),
    ((5, 7, "rgb8", -21, bytes(105)), "step must be >= 1, got -21"),
    ((5.0, 7, "rgb8", 21, bytes(105)), "height must be an integer, got float 5.0"),
    ((100_000, 100_000, "mono8", 100_000, b""), "100000x100000 = 10000000000 pixels exceeds the limit"),
    ((2**31, 2**31, "rgb8", 3 * 2**31, bytes(10)), "exceeds the limit"),
    ((1000, 1000, "mono8", 2**62, bytes(1000)), "data is shorter than height * step"),
    ((4, 7, "yuv422", 14, bytes(56)), "width 7 is odd, but yuv422 packs two pixels"),
    ((4, 7, "yuyv", 14, bytes(56)), "width 7 is odd"),
    ((2, 2, "mono8", 2, [1, 2, 3, 4]), "data must be bytes-like"),
    ((2, 2, "mono8", 2, None), "data must be bytes-like"),
    ((2, 2, "mono8", 2, "abcd"), "data must be bytes-like"),
]


@pytest.mark.parametrize("args, fragment", _MALFORMED, ids=[m[1][:40] for m in _MALFORMED])
def test_malformed_raw_images_raise_a_typed_error_naming_the_problem(args: tuple, fragment: str) -> None:
    for convert in (image_to_numpy, image_to_rgb):
        with pytest.raises(ImageDecodeError) as info:
            convert(*args)
        assert fragment in str(info.value)


def test_max_pixels_is_a_parameter() -> None:
    assert image_to_numpy(10, 10, "mono8", 10, bytes(100), max_pixels=100).shape == (10, 10)
    with pytest.raises(ImageDecodeError, match="10x10 = 100 pixels exceeds the limit of 99"):
        image_to_numpy(10, 10, "mono8", 10, bytes(100), max_pixels=99)


def test_encoder_refuses_arrays_that_do_not_match_the_encoding() -> None:
    with pytest.raises(ImageEncodeError, match="needs dtype uint8, got uint16"):
        numpy_to_image(np.zeros((2, 3, 3), np.uint16), "rgb8")
    with pytest.raises(ImageEncodeError, match=r"needs a \(H, W, 3\) array, got shape \(2, 3\)"):
        numpy_to_image(np.zeros((2, 3), np.uint8), "bgr8")
    with pytest.raises(ImageEncodeError, match="width 3 is odd"):
        numpy_to_image(np.zeros((2, 3, 2), np.uint8), "uyvy")
    with pytest.raises(ImageEncodeError, match="step 8 is smaller than a row of 9 bytes"):
        numpy_to_image(np.zeros((2, 3, 3), np.uint8), "rgb8", step=8)
    with pytest.raises(ImageEncodeError, match="unknown image encoding 'rgb9'"):
        numpy_to_image(np.zeros((2, 3, 3), np.uint8), "rgb9")
    # (H, W, 1) is accepted for one-channel encodings.
    assert numpy_to_image(np.ones((2, 3, 1), np.float32), "32FC1").data == np.ones(6, "<f4").tobytes()


# --------------------------------------------------------------------------- compressed images


def _smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 2 % 256], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact_for_8_and_16_bit() -> None:
    rng = np.random.default_rng(RNG_SEED)
    cases = [
        (rng.integers(0, 256, (31, 17, 3), dtype=np.uint8), None, "rgb8; png compressed bgr8"),
        (rng.integers(0, 256, (31, 17, 3), dtype=np.uint8), "bgr8", "bgr8; png compressed bgr8"),
        (rng.integers(0, 256, (31, 17), dtype=np.uint8), None, "mono8; png compressed "),
        (rng.integers(0, 65536, (31, 17), dtype=np.uint16), None, "mono16; png compressed "),
        (rng.integers(0, 65536, (31, 17), dtype=np.uint16), "16UC1", "16UC1; png compressed "),
        (rng.integers(0, 65536, (31, 17, 3), dtype=np.uint16), None, "rgb16; png compressed bgr16"),
    ]
    for pixels, encoding, fmt in cases:
        compressed = numpy_to_compressed(pixels, "png", encoding=encoding)
        assert compressed.format == fmt
        assert compressed.data[:8] == b"\x89PNG\r\n\x1a\n"
        decoded = compressed_to_numpy(compressed.format, compressed.data)
        expected = pixels[:, :, ::-1] if encoding == "bgr8" else pixels  # output is always RGB
        np.testing.assert_array_equal(decoded, expected, strict=True, err_msg=fmt)


def test_jpeg_round_trip_is_close() -> None:
    rgb = _smooth_rgb()
    compressed = numpy_to_compressed(rgb, "jpeg", quality=95)
    assert compressed.format == "rgb8; jpeg compressed bgr8"
    decoded = compressed_to_numpy(compressed.format, compressed.data)
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - rgb.astype(int))
    assert error.mean() < 2.0 and error.max() <= 24, (error.mean(), error.max())
    # Channel order: a red image stays red.
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = compressed_to_numpy(*numpy_to_compressed(red, "jpeg"))
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15

    grey = rgb[:, :, 0]
    mono = numpy_to_compressed(grey, "jpg")
    assert mono.format == "mono8; jpeg compressed "
    assert compressed_to_numpy(mono.format, mono.data).shape == grey.shape


def test_format_strings_as_ros_publishers_write_them() -> None:
    rgb = _smooth_rgb(8, 8)
    _, standard_png = cv2.imencode(".png", rgb[:, :, ::-1])  # a normal file: BGR in, correct colours
    _, swapped_png = cv2.imencode(".png", rgb)  # an old publisher that compressed RGB bytes as is
    for fmt in ("png", "PNG", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8", "rgba8; png compressed bgr8"):
        np.testing.assert_array_equal(compressed_to_numpy(fmt, standard_png.tobytes()), rgb, err_msg=fmt)
    np.testing.assert_array_equal(compressed_to_numpy("rgb8; png compressed rgb8", swapped_png.tobytes()), rgb)

    colour = (200, 100, 30)
    mosaic = _mosaic("rggb", colour, 6, 8, np.uint8)
    _, mosaic_png = cv2.imencode(".png", mosaic)
    assert np.all(compressed_to_numpy("bayer_rggb8; png compressed ", mosaic_png.tobytes()) == colour)


def test_alpha_is_dropped_from_png() -> None:
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 2] = 255  # red
    bgra[..., 3] = 7
    _, png = cv2.imencode(".png", bgra)
    out = compressed_to_numpy("png", png.tobytes())
    assert out.shape == (4, 5, 3) and np.all(out == (255, 0, 0))


def _jpeg_bytes() -> bytes:
    return numpy_to_compressed(_smooth_rgb(), "jpeg").data


def _png_bytes() -> bytes:
    return numpy_to_compressed(_smooth_rgb(), "png").data


def _with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR size replaced (and the chunk CRC fixed, so only the size is wrong)."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


_MALFORMED_COMPRESSED = [
    ("jpeg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated JPEG"),
    ("jpeg", lambda: _jpeg_bytes()[:-2], "no end-of-image marker"),
    ("jpeg", lambda: _jpeg_bytes()[:200], "JPEG"),
    ("jpeg", lambda: b"", "data is not a JPEG"),
    ("jpeg", lambda: b"\xff\xd8\xff\xd9", "JPEG"),
    ("jpeg", lambda: bytes(range(256)) * 4, "data is not a JPEG"),
    ("jpeg", lambda: _png_bytes(), "data is not a JPEG"),
    ("png", lambda: _jpeg_bytes(), "data is not a PNG"),
    ("png", lambda: _png_bytes()[: len(_png_bytes()) // 2], "corrupt or truncated png"),
    ("png", lambda: _png_bytes()[:20], "data is not a PNG"),
    ("png", lambda: _png_bytes()[:40] + bytes(60) + _png_bytes()[100:], "corrupt or truncated png"),
    ("png", lambda: _with_png_size(_png_bytes(), 0, 48), "empty 0x48 image"),
    ("png", lambda: _with_png_size(_png_bytes(), 100_000, 100_000), "refusing to decompress"),
    ("jpeg", lambda: _with_jpeg_size(_jpeg_bytes(), 65535, 65535), "65535x65535 = 4294836225 pixels"),
    ("jpeg", lambda: _with_jpeg_size(_jpeg_bytes(), 0, 48), "empty 0x48 image"),
    ("webp", lambda: _jpeg_bytes(), "unknown compressed image format 'webp'"),
    ("rgb8; jpeg compressed yuv", lambda: _jpeg_bytes(), "compressed channel order 'yuv'"),
    ("rgb9; jpeg compressed bgr8", lambda: _jpeg_bytes(), "unknown image encoding 'rgb9'"),
    ("16UC1; compressedDepth png", lambda: _png_bytes(), "compressedDepth"),
    ("", lambda: _jpeg_bytes(), "unknown compressed image format ''"),
]


@pytest.mark.parametrize("fmt, make_data, fragment", _MALFORMED_COMPRESSED,
                         ids=[f"{i}-{m[2][:30]}" for i, m in enumerate(_MALFORMED_COMPRESSED)])
def test_malformed_compressed_images_raise_a_typed_error(fmt: str, make_data, fragment: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_numpy(fmt, make_data())
    assert fragment in str(info.value)


def test_oversized_images_are_refused_before_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*_args, **_kwargs):
        raise AssertionError("imdecode was called for an image over the pixel limit")

    monkeypatch.setattr(ic.cv2, "imdecode", must_not_decode)
    for fmt, data in (("png", _png_bytes()), ("jpeg", _jpeg_bytes())):
        with pytest.raises(ImageDecodeError, match="64x48 = 3072 pixels, over the limit of 3000"):
            compressed_to_numpy(fmt, data, max_pixels=3000)


def test_compressed_encoder_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ImageEncodeError, match="JPEG holds 8-bit pixels"):
        numpy_to_compressed(np.zeros((4, 4), np.uint16), "jpeg")
    with pytest.raises(ImageEncodeError, match="unknown compression format 'webp'"):
        numpy_to_compressed(np.zeros((4, 4), np.uint8), "webp")
    with pytest.raises(ImageEncodeError, match=r"\(H, W\) or \(H, W, 3\)"):
        numpy_to_compressed(np.zeros((4, 4, 4), np.uint8), "png")
    with pytest.raises(ImageEncodeError, match="uint8 or uint16 pixels, got float32"):
        numpy_to_compressed(np.zeros((4, 4), np.float32), "png")
    with pytest.raises(ImageEncodeError, match="encoding 'mono8' does not describe"):
        numpy_to_compressed(np.zeros((4, 4, 3), np.uint8), "png", encoding="mono8")
    with pytest.raises(ImageEncodeError, match="quality must lie in 1..100, got 0"):
        numpy_to_compressed(np.zeros((4, 4), np.uint8), "jpeg", quality=0)


# --------------------------------------------------------------------------- properties

_HUGE = st.sampled_from([2**31 - 1, 2**32, 2**40, 2**63])
_ENCODING_NAMES = st.sampled_from(SUPPORTED_ENCODINGS + ("", "RGB8", "nv12", "bgr 8", "32FC5", "16FC1"))


@st.composite
def _raw_image_fields(draw: st.DrawFn) -> tuple:
    height = draw(st.integers(-2, 40) | _HUGE)
    width = draw(st.integers(-2, 40) | _HUGE)
    encoding = draw(_ENCODING_NAMES)
    step = draw(st.integers(-2, 400) | _HUGE)
    exact = height * step if 0 < height * step <= 20_000 else 0
    length = draw(st.sampled_from([exact, max(exact - 1, 0), exact + 1]) | st.integers(0, 2_000))
    return height, width, encoding, step, bytes(length), draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_raw_image_fields())
def test_any_raw_fields_give_a_correct_image_or_image_decode_error(fields: tuple) -> None:
    height, width, encoding, step = fields[:4]
    for convert in (image_to_numpy, image_to_rgb):
        try:
            out = convert(*fields)
        except ImageDecodeError:
            continue
        assert out.shape[:2] == (height, width)
        if convert is image_to_rgb:
            assert out.shape == (height, width, 3) and out.dtype == np.uint8
        else:
            info = describe_encoding(encoding)
            assert out.dtype == info.dtype and step * height == len(fields[4])


_JPEG_SMALL = numpy_to_compressed(_smooth_rgb(12, 16), "jpeg").data
_PNG_SMALL = numpy_to_compressed(_smooth_rgb(12, 16), "png").data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["jpeg", "png"]), st.data())
def test_any_damage_to_a_compressed_image_gives_an_image_or_image_decode_error(fmt: str, data: st.DataObject) -> None:
    original = bytearray(_JPEG_SMALL if fmt == "jpeg" else _PNG_SMALL)
    damage = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if damage == "truncate":
        original = original[: data.draw(st.integers(0, len(original)))]
    elif damage == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(original) - 1))
            original[position] = data.draw(st.integers(0, 255))
    else:
        start = data.draw(st.integers(0, len(original)))
        original[start:start] = data.draw(st.binary(max_size=32))
    try:
        out = compressed_to_numpy(fmt, bytes(original), max_pixels=100_000)
    except ImageDecodeError:
        return
    assert out.ndim in (2, 3) and out.size <= 100_000 * 3


# --------------------------------------------------------------------------- real rclpy messages


def test_rclpy_image_fields_decode_directly() -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    message = sensor_msgs.Image(height=3, width=5, encoding="bgr8", is_bigendian=0, step=16,
                                data=_pack(pixels, 16, False, 9))
    decoded = image_to_numpy(message.height, message.width, message.encoding, message.step, message.data,
                             message.is_bigendian)
    np.testing.assert_array_equal(decoded, pixels)
    np.testing.assert_array_equal(
        image_to_rgb(message.height, message.width, message.encoding, message.step, message.data), pixels[:, :, ::-1])


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "32FC1", "yuv422", "bayer_grbg16", "64FC3"])
def test_rclpy_serialized_image_round_trip(encoding: str) -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    from rclpy.serialization import deserialize_message, serialize_message

    pixels = _random_pixels(encoding, 6, 10, np.random.default_rng(RNG_SEED))
    raw = numpy_to_image(pixels, encoding, step=describe_encoding(encoding).bytes_per_pixel * 10 + 6,
                         is_bigendian=True)
    message = sensor_msgs.Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                                is_bigendian=int(raw.is_bigendian), step=raw.step, data=raw.data)
    received = deserialize_message(serialize_message(message), sensor_msgs.Image)
    decoded = image_to_numpy(received.height, received.width, received.encoding, received.step, received.data,
                             received.is_bigendian)
    np.testing.assert_array_equal(decoded, pixels, strict=True)


def test_rclpy_compressed_image_round_trip() -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    from rclpy.serialization import deserialize_message, serialize_message

    rgb = _smooth_rgb()
    compressed = numpy_to_compressed(rgb, "png")
    message = sensor_msgs.CompressedImage(format=compressed.format, data=compressed.data)
    received = deserialize_message(serialize_message(message), sensor_msgs.CompressedImage)
    np.testing.assert_array_equal(compressed_to_numpy(received.format, received.data), rgb)
