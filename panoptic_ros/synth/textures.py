"""Appearance of the synthetic streets: colour palettes, the per-sequence look, sky, grain and post effects.

Why a module of its own: the world (``world.py``) decides *what* is where and the
rasteriser (``render.py``) decides *which pixel* belongs to what; how things look
(colours, lighting, weather, sensor noise, blur) varies independently of both and
never touches the labels.

Colours are RGB floats 0..255. Class colour families are kept apart on purpose
(roads dark grey, sidewalks lighter paving, vegetation greens, terrain yellow-green,
...) so that a small network can learn every class, while the variation inside each
family (and the lighting) keeps it from learning one exact colour.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import cv2
import numpy as np


def rng_for(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """A generator seeded from (seed, purpose, extra...): independent streams, never the global state."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(purpose.encode()), *[int(e) & 0xFFFFFFFF for e in extra]])


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) * rng.uniform(1.0 - amount, 1.0 + amount)
    c += rng.normal(0.0, amount * 40.0, 3)
    return np.clip(c, 0.0, 255.0)


# --------------------------------------------------------------------------- palettes

_CAR_COLORS = [
    (235, 235, 232), (25, 25, 28), (170, 172, 176), (105, 108, 112), (160, 25, 25), (30, 60, 140),
    (20, 90, 60), (210, 170, 30), (120, 20, 30), (200, 200, 190), (60, 40, 30), (230, 110, 20),
    (70, 140, 190), (90, 90, 60), (140, 150, 160), (240, 240, 245),
]
_BUS_COLORS = [(230, 190, 20), (200, 30, 30), (235, 235, 235), (30, 90, 170), (40, 140, 70), (240, 120, 20)]
_TRUCK_CAB_COLORS = [(235, 235, 235), (200, 30, 30), (30, 70, 150), (240, 200, 30), (40, 40, 45), (60, 120, 60)]
_TRUCK_BOX_COLORS = [(238, 238, 236), (220, 220, 215), (200, 205, 210), (150, 40, 40), (40, 80, 140), (230, 230, 230)]
_CLOTHES = [
    (30, 30, 35), (50, 60, 90), (140, 30, 30), (200, 200, 200), (40, 90, 50), (160, 120, 80),
    (90, 90, 95), (20, 40, 80), (180, 150, 40), (120, 60, 120), (220, 100, 40), (60, 110, 170),
]
_SKIN = [(235, 200, 170), (210, 165, 130), (170, 120, 85), (120, 80, 55), (90, 60, 40)]
_HAIR = [(30, 25, 20), (70, 50, 30), (140, 100, 50), (200, 180, 120), (120, 120, 120)]
_BUILDING = [
    (200, 185, 160), (180, 170, 155), (150, 90, 70), (170, 110, 80), (215, 210, 200), (130, 130, 135),
    (190, 175, 140), (160, 150, 140), (120, 100, 90), (200, 200, 190), (175, 140, 110), (140, 150, 155),
]
_SIGN_FRONTS = [(200, 30, 30), (30, 70, 170), (235, 235, 235), (240, 200, 20), (30, 120, 60)]


@dataclass(frozen=True)
class StreetPalette:
    """Per-sequence base colours of the stuff classes."""

    road: tuple[float, float, float]
    road_patch: tuple[float, float, float]
    marking: tuple[float, float, float]
    kerb: tuple[float, float, float]
    sidewalk: tuple[float, float, float]
    sidewalk_joint: tuple[float, float, float]
    yard_paving: tuple[float, float, float]
    terrain: tuple[float, float, float]
    vegetation: tuple[float, float, float]
    pole: tuple[float, float, float]
    wall: tuple[float, float, float]
    fence: tuple[float, float, float]
    window: tuple[float, float, float]


def sample_street_palette(rng: np.random.Generator) -> StreetPalette:
    def t(c: np.ndarray) -> tuple[float, float, float]:
        return (float(c[0]), float(c[1]), float(c[2]))

    road_v = rng.uniform(62, 100)
    road = t(_jitter(rng, (road_v, road_v * rng.uniform(0.98, 1.02), road_v * rng.uniform(1.0, 1.08)), 0.04))
    paving = [(150, 150, 148), (175, 168, 155), (165, 120, 105), (135, 138, 140), (185, 180, 170)]
    side = t(_jitter(rng, paving[rng.integers(len(paving))], 0.06))
    terr = [(125, 165, 70), (150, 170, 85), (140, 150, 80), (115, 145, 60)]
    veg = [(50, 95, 35), (40, 80, 40), (65, 105, 40), (45, 90, 55)]
    walls = [(175, 170, 160), (150, 145, 135), (185, 160, 130), (120, 115, 110)]
    fences = [(120, 85, 55), (45, 70, 50), (150, 150, 150), (90, 90, 95), (160, 120, 80)]
    poles = [(120, 122, 125), (70, 80, 70), (50, 50, 55), (150, 150, 150)]
    return StreetPalette(
        road=road,
        road_patch=t(np.asarray(road) * rng.uniform(0.8, 0.92)),
        marking=t(_jitter(rng, (228, 228, 222), 0.03)),
        kerb=t(_jitter(rng, (175, 175, 170), 0.05)),
        sidewalk=side,
        sidewalk_joint=t(np.asarray(side) * 0.8),
        yard_paving=t(_jitter(rng, paving[rng.integers(len(paving))], 0.06)),
        terrain=t(_jitter(rng, terr[rng.integers(len(terr))], 0.06)),
        vegetation=t(_jitter(rng, veg[rng.integers(len(veg))], 0.08)),
        pole=t(_jitter(rng, poles[rng.integers(len(poles))], 0.05)),
        wall=t(_jitter(rng, walls[rng.integers(len(walls))], 0.05)),
        fence=t(_jitter(rng, fences[rng.integers(len(fences))], 0.06)),
        window=t(_jitter(rng, (55, 65, 80), 0.1)),
    )


def car_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.06)


def bus_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _BUS_COLORS[rng.integers(len(_BUS_COLORS))], 0.05)


def truck_colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (_jitter(rng, _TRUCK_CAB_COLORS[rng.integers(len(_TRUCK_CAB_COLORS))], 0.05),
            _jitter(rng, _TRUCK_BOX_COLORS[rng.integers(len(_TRUCK_BOX_COLORS))], 0.04))


def clothes_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 0.1)


def skin_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.05)


def hair_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.05)


def building_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _BUILDING[rng.integers(len(_BUILDING))], 0.07)


def sign_front_color(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, _SIGN_FRONTS[rng.integers(len(_SIGN_FRONTS))], 0.04)


# --------------------------------------------------------------------------- the look of a sequence


@dataclass(frozen=True)
class SceneLook:
    """Lighting and weather of one sequence (all colours RGB 0..255, directions in the world frame)."""

    weather: str  # "sunny", "overcast", "fog", "rain"
    sun_dir: tuple[float, float, float]  # unit vector from the scene towards the sun (world, y down)
    ambient: float  # shading of faces turned away from the sun
    diffuse: float  # extra shading of faces lit head-on
    tint: tuple[float, float, float]  # colour temperature gains
    exposure: float  # global brightness gain
    exposure_wobble: float  # relative amplitude of slow per-frame brightness changes
    exposure_period_s: float
    exposure_phase: float
    fog_rgb: tuple[float, float, float]
    fog_distance_m: float  # haze reaches 63 % at this distance
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    clouds: float  # 0 clear .. 1 full overcast texture
    noise_sigma: float  # sensor noise, grey levels
    grain: float  # strength of the class-dependent surface grain
    shadows: bool
    rain: float  # 0 none .. 1 heavy streaks
    blur_probability: float  # chance that a frame is motion- or defocus-blurred

    def exposure_at(self, t_s: float) -> float:
        return self.exposure * (1.0 + self.exposure_wobble * math.sin(2 * math.pi * t_s / self.exposure_period_s
                                                                       + self.exposure_phase))


def sample_look(rng: np.random.Generator, fog_probability: float, rain_probability: float,
                overcast_probability: float, blur_probability: float,
                noise_sigma_range: tuple[float, float]) -> SceneLook:
    r = rng.random()
    if r < fog_probability:
        weather = "fog"
    elif r < fog_probability + rain_probability:
        weather = "rain"
    elif r < fog_probability + rain_probability + overcast_probability:
        weather = "overcast"
    else:
        weather = "sunny"
    az = rng.uniform(-math.pi, math.pi)
    el = rng.uniform(math.radians(20), math.radians(60))
    sun = (math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az))
    warm = rng.uniform(-1.0, 1.0)
    if weather == "sunny":
        tint = (1.0 + 0.06 * warm, 1.0 + 0.01 * warm, 1.0 - 0.07 * warm)
        ambient, diffuse = rng.uniform(0.55, 0.7), rng.uniform(0.35, 0.55)
        sky_top = tuple(_jitter(rng, (70, 130, 205), 0.06))
        sky_hor = tuple(_jitter(rng, (185, 210, 235), 0.04))
        fog_d = rng.uniform(250, 500)
        clouds = rng.uniform(0.0, 0.4)
        exposure = rng.uniform(0.95, 1.12)
    elif weather == "overcast":
        tint = (1.0 - 0.02 * warm, 1.0, 1.0 + 0.03)
        ambient, diffuse = rng.uniform(0.75, 0.85), rng.uniform(0.1, 0.2)
        g = rng.uniform(165, 205)
        sky_top = tuple(_jitter(rng, (g - 25, g - 18, g - 8), 0.03))
        sky_hor = tuple(_jitter(rng, (g + 15, g + 17, g + 20), 0.02))
        fog_d = rng.uniform(160, 300)
        clouds = rng.uniform(0.5, 1.0)
        exposure = rng.uniform(0.85, 1.0)
    elif weather == "fog":
        tint = (0.98, 1.0, 1.03)
        ambient, diffuse = rng.uniform(0.8, 0.9), rng.uniform(0.05, 0.15)
        g = rng.uniform(175, 210)
        sky_top = (g - 10, g - 6, g)
        sky_hor = (g + 5, g + 7, g + 9)
        fog_d = rng.uniform(45, 90)
        clouds = 0.0
        exposure = rng.uniform(0.9, 1.0)
    else:  # rain
        tint = (0.96, 0.99, 1.05)
        ambient, diffuse = rng.uniform(0.72, 0.82), rng.uniform(0.08, 0.16)
        g = rng.uniform(130, 170)
        sky_top = (g - 15, g - 10, g)
        sky_hor = (g + 20, g + 22, g + 26)
        fog_d = rng.uniform(90, 160)
        clouds = rng.uniform(0.6, 1.0)
        exposure = rng.uniform(0.78, 0.92)
    fog_rgb = tuple(float(v) for v in np.asarray(sky_hor) * rng.uniform(0.92, 1.0))
    return SceneLook(
        weather=weather, sun_dir=tuple(float(v) for v in sun), ambient=float(ambient), diffuse=float(diffuse),
        tint=tuple(float(v) for v in tint), exposure=float(exposure),
        exposure_wobble=float(rng.uniform(0.0, 0.08)), exposure_period_s=float(rng.uniform(4.0, 15.0)),
        exposure_phase=float(rng.uniform(0, 2 * math.pi)), fog_rgb=fog_rgb, fog_distance_m=float(fog_d),
        sky_top=tuple(float(v) for v in sky_top), sky_horizon=tuple(float(v) for v in sky_hor),
        clouds=float(clouds), noise_sigma=float(rng.uniform(*noise_sigma_range)),
        grain=float(rng.uniform(0.7, 1.3)), shadows=weather == "sunny",
        rain=float(rng.uniform(0.4, 1.0)) if weather == "rain" else 0.0,
        blur_probability=float(blur_probability),
    )


# --------------------------------------------------------------------------- per-pixel assets


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """float32 (height, width) value noise in about [-1, 1] with features of ``cell_px`` pixels."""
    gh, gw = max(2, int(math.ceil(height / cell_px)) + 2), max(2, int(math.ceil(width / cell_px)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(g, (int(gw * cell_px), int(gh * cell_px)), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(up[:height, :width]) * 0.8


def make_sky(look: SceneLook, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 (height, width, 3) sky; row 0 is the zenith side, the last row lies at the horizon."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None] ** 0.7
    top = np.asarray(look.sky_top, np.float32)[None, None]
    hor = np.asarray(look.sky_horizon, np.float32)[None, None]
    sky = top * (1 - t) + hor * t
    sky = np.repeat(sky, width, axis=1)
    if look.clouds > 0:
        cell = max(8.0, width / 12.0)
        n = smooth_noise(rng, height, width, cell) + 0.5 * smooth_noise(rng, height, width, cell / 3)
        cover = np.clip((n + (look.clouds - 0.5) * 1.5) * 1.2, 0.0, 1.0)[..., None] * min(1.0, 0.3 + look.clouds)
        cloud_rgb = np.asarray(look.sky_horizon, np.float32) * 1.03 + 10.0
        shade = (0.82 + 0.18 * np.clip(n, -1, 1))[..., None]
        sky = sky * (1 - cover) + np.clip(cloud_rgb * shade, 0, 255) * cover
    return np.clip(sky, 0, 255).astype(np.uint8)


def make_grain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """int16 (height, width) zero-mean grain mixing fine speckle and blotches, about +-64."""
    fine = rng.standard_normal((height, width)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (3, 3), 0.7)
    blot = smooth_noise(rng, height, width, max(3.0, width / 160.0))
    g = 18.0 * fine + 26.0 * blot
    return np.clip(g, -127, 127).astype(np.int16)


def make_sensor_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 (height, width, 3) tiles, the positive and negative parts of Gaussian noise."""
    n = rng.normal(0.0, sigma, (height, width, 3)).astype(np.float32)
    return (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))


def make_rain(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """uint8 (height, width, 3) slanted bright streaks to add on top of a frame."""
    layer = np.zeros((height, width), np.uint8)
    n = int(strength * height * width / 900)
    x = rng.uniform(0, width, n)
    y = rng.uniform(0, height, n)
    length = rng.uniform(0.02, 0.06, n) * height
    slant = rng.uniform(0.05, 0.2)
    val = rng.integers(20, 60, n)
    for xi, yi, li, vi in zip(x, y, length, val):
        cv2.line(layer, (int(xi), int(yi)), (int(xi + slant * li), int(yi + li)), int(vi), 1, cv2.LINE_AA)
    return cv2.cvtColor(layer, cv2.COLOR_GRAY2RGB)


# Grain strength per class (0..255 scale of the multiplicative modulation): rough classes get
# more texture, smooth ones less, so texture itself helps telling classes apart.
GRAIN_BY_CLASS = {
    0: 22,   # road: fine asphalt speckle
    1: 30,   # sidewalk
    2: 14,   # building
    3: 34,   # wall
    4: 26,   # fence
    5: 8,    # pole
    6: 6,    # traffic light
    7: 6,    # traffic sign
    8: 80,   # vegetation: strong foliage texture
    9: 60,   # terrain: grass
    10: 4,   # sky
    11: 12, 12: 12, 13: 8, 14: 8, 15: 8, 16: 8, 17: 8, 18: 8,
}


def grain_lut(strength: float) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for k, v in GRAIN_BY_CLASS.items():
        lut[k] = int(min(255, round(v * strength)))
    return lut
