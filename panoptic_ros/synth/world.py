"""The simulated street: layout, meshes, ego motion, traffic, pedestrians, props and scripted occlusions.

Everything here is geometry and kinematics in metres and seconds; nothing is drawn
(``render.py`` rasterises it). The whole world of a sequence is simulated once, at
construction, into per-frame pose arrays, so any frame can be rendered on its own.

World frame: X right across the street, Y down (the ground is Y = 0, so heights are
negative Y), Z forward along the street; the ego drives towards +Z. Object-local
frames use the same axes (x right, y down, z forward), with the origin on the ground
at the centre of the object's footprint. Headings rotate about Y: heading 0 faces +Z,
heading pi faces -Z (oncoming traffic).

Occlusion events are arranged on purpose (``WorldBuilder._plan_occlusions``): a bus or truck in
a lane between the camera and something farther out (a pedestrian on the far sidewalk,
a parked car, a car in the far lane, a cyclist) is placed and timed so that the farther
object disappears completely behind it for 10-40 frames and re-emerges. The plan is
checked with exact ray/box tests; the reported events come from the rendered labels.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from panoptic_ros.camera import CameraIntrinsics, CameraModel, CameraMounting
from panoptic_ros.synth import textures as tx
from panoptic_ros.synth.textures import SceneLook, StreetPalette, rng_for

# Cityscapes train ids (panoptic_ros.classes.CITYSCAPES).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

NEAR_M = 0.25  # near clipping plane of the renderer
FACE_PAD = 10  # most vertices of one face (Mesh.face_pad width)


@dataclass(frozen=True)
class SynthConfig:
    """All knobs of the generator. Ranges are (low, high) and are sampled once per sequence.

    The simulated world of a seed depends on (seed, num_frames) and on these knobs, but not on
    ``height``/``width`` as long as the aspect ratio stays the same: a seed shows the same scene
    at 256x512 and at 512x1024.
    """

    height: int = 512  # image rows
    width: int = 1024  # image columns
    fps: float = 10.0  # frame rate: stamps and motion per frame
    hfov_deg: tuple[float, float] = (50.0, 64.0)  # horizontal field of view (square pixels)
    camera_height_m: tuple[float, float] = (1.2, 1.7)  # optical centre above the road
    pitch_deg: tuple[float, float] = (1.0, 5.0)  # downward pitch of the mounting
    pitch_bounce_deg: float = 0.3  # amplitude of the per-frame pitch oscillation (frame.camera has it)
    ego_speed_mps: tuple[float, float] = (3.0, 13.0)  # the ego's speed varies within this range
    lane_change_probability: float = 0.35  # chance of one lane change when a same-direction lane exists
    traffic_density: float = 1.0  # scales moving and parked vehicles
    pedestrian_density: float = 1.0  # scales people on sidewalks and crossing the street
    occlusion_events_per_100_frames: float = 1.5  # scripted full occlusions behind buses/trucks
    view_distance_m: float = 170.0  # things farther than this are not drawn (small props: 0.55x)
    min_thing_area_px_at_256x512: float = 150.0  # smaller (unoccluded) things are labelled void
    fog_probability: float = 0.15  # weather of a sequence: fog, rain, overcast, else sunny
    rain_probability: float = 0.12
    overcast_probability: float = 0.33
    blur_probability: float = 0.08  # per frame: motion or defocus blur
    noise_sigma: tuple[float, float] = (1.0, 4.5)  # sensor noise, grey levels
    effects: bool = True  # grain, blur, noise, rain; off gives flat-shaded images (labels unchanged)

    def __post_init__(self) -> None:
        if not (isinstance(self.height, int) and isinstance(self.width, int) and self.height >= 16
                and self.width >= 16):
            raise ValueError(f"image size must be integers >= 16, got height={self.height!r} width={self.width!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        for name in ("hfov_deg", "camera_height_m", "pitch_deg", "ego_speed_mps", "noise_sigma"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"{name} must be a (low, high) range with low <= high, got {getattr(self, name)!r}")
        if not (5.0 <= self.hfov_deg[0] and self.hfov_deg[1] <= 120.0):
            raise ValueError(f"hfov_deg must lie within 5..120 degrees, got {self.hfov_deg!r}")
        if not (0.3 <= self.camera_height_m[0] and self.camera_height_m[1] <= 4.0):
            raise ValueError(f"camera_height_m must lie within 0.3..4 m, got {self.camera_height_m!r}")
        if not (-10.0 <= self.pitch_deg[0] and self.pitch_deg[1] <= 20.0):
            raise ValueError(f"pitch_deg must lie within -10..20 degrees, got {self.pitch_deg!r}")
        if not (0.0 <= self.ego_speed_mps[0] and self.ego_speed_mps[1] <= 30.0):
            raise ValueError(f"ego_speed_mps must lie within 0..30 m/s, got {self.ego_speed_mps!r}")
        for name in ("lane_change_probability", "fog_probability", "rain_probability", "overcast_probability",
                     "blur_probability"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} is a probability in [0, 1], got {v!r}")
        for name in ("traffic_density", "pedestrian_density", "occlusion_events_per_100_frames",
                     "min_thing_area_px_at_256x512", "pitch_bounce_deg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not self.view_distance_m > 20:
            raise ValueError(f"view_distance_m must exceed 20 m, got {self.view_distance_m!r}")

    @property
    def min_thing_area_px(self) -> float:
        """The void threshold at this config's resolution."""
        return self.min_thing_area_px_at_256x512 * (self.height * self.width) / (256 * 512)


# --------------------------------------------------------------------------- meshes


@dataclass
class DetailGroup:
    """Image-only polygons lying on face ``parent`` (windows, lights, pickets); one colour, drawn at once."""

    parent: int
    vidx: np.ndarray  # int (m, k) vertex indices into the mesh's verts
    color: np.ndarray  # (3,) RGB


@dataclass
class Billboards:
    """Screen-facing blobs (tree crowns): a 3D centre, a radius in metres, a fixed outline."""

    centers: np.ndarray  # (B, 3) local
    radii: np.ndarray  # (B,)
    shapes: np.ndarray  # (B, K, 2) outline on the unit circle
    colors: np.ndarray  # (B, 3)
    class_id: int


@dataclass
class Anim:
    """Swing of a limb: vertices ``v0:v1`` and faces ``f0:f1`` rotate about the x axis through ``pivot``."""

    v0: int
    v1: int
    f0: int
    f1: int
    pivot: np.ndarray  # (3,)
    amplitude_rad: float
    phase: float


@dataclass
class Mesh:
    """A set of convex polygons (faces of convex parts), drawn in list order after back-face culling."""

    verts: np.ndarray  # (n, 3)
    faces: list[np.ndarray]
    normals: np.ndarray  # (F, 3) outward
    centers: np.ndarray  # (F, 3)
    colors: np.ndarray  # (F, 3)
    classes: np.ndarray  # (F,) train ids
    tracks: np.ndarray  # (F,) track ids, 0 for stuff
    details: list[DetailGroup]
    billboards: Billboards | None
    anims: list[Anim]
    aabb: np.ndarray  # (6,) x0, x1, y0, y1, z0, z1 of all geometry
    face_pad: np.ndarray  # (F, K) vertex indices of each face, padded by repeating its last vertex

    @property
    def track_ids(self) -> list[int]:
        return sorted({int(t) for t in self.tracks if t > 0})


def polygon_normals(p: np.ndarray) -> np.ndarray:
    """Newell's vector (2 x area x unit normal) of each polygon of ``p`` (..., k, 3), summed over its edges.

    ``np.cross(p, np.roll(p, -1, axis=-2)).sum(axis=-2)`` with the same arithmetic in the same order
    (bit-identical), without np.cross's per-call overhead, which dominated world building (thousands of
    calls on a few polygons each).
    """
    q = np.concatenate([p[..., 1:, :], p[..., :1, :]], axis=-2)  # np.roll(p, -1, axis=-2)
    a0, a1, a2 = p[..., 0], p[..., 1], p[..., 2]
    b0, b1, b2 = q[..., 0], q[..., 1], q[..., 2]
    cp = np.empty(p.shape)
    cp[..., 0] = a1 * b2 - a2 * b1
    cp[..., 1] = a2 * b0 - a0 * b2
    cp[..., 2] = a0 * b1 - a1 * b0
    return cp.sum(axis=-2)


class MeshBuilder:
    """Collects convex parts; every face is one convex polygon with an outward normal."""

    def __init__(self) -> None:
        self._verts: list[np.ndarray] = []
        self._n = 0
        self._faces: list[np.ndarray] = []
        self._normals: list[np.ndarray] = []
        self._centers: list[np.ndarray] = []
        self._colors: list[np.ndarray] = []
        self._classes: list[int] = []
        self._tracks: list[int] = []
        self._details: list[DetailGroup] = []
        self._bb: list[tuple] = []
        self._anims: list[Anim] = []

    @property
    def num_faces(self) -> int:
        return len(self._faces)

    @property
    def num_verts(self) -> int:
        return self._n

    def _add_verts(self, v: np.ndarray) -> int:
        start = self._n
        self._verts.append(np.asarray(v, dtype=np.float64))
        self._n += len(v)
        return start

    def part(self, verts: np.ndarray, polys: list[list[int]], color, cls: int, track: int,
             face_colors: dict[int, object] | None = None) -> list[int]:
        """Add a convex part: ``polys`` index ``verts``; returns the new face ids in order."""
        verts = np.asarray(verts, dtype=np.float64)
        start = self._add_verts(verts)
        centroid = verts.mean(axis=0)
        normals = np.zeros((len(polys), 3))
        centers = np.zeros((len(polys), 3))
        groups: list[tuple[list[int] | slice, np.ndarray]]  # (which polys, their vertex indices (g, k))
        if polys and all(len(poly) == len(polys[0]) for poly in polys):  # boxes, most prisms: one group
            groups = [(slice(None), np.array(polys))]
        else:
            by_len: dict[int, list[int]] = {}
            for i, poly in enumerate(polys):
                by_len.setdefault(len(poly), []).append(i)
            groups = [(members, np.array([polys[i] for i in members])) for members in by_len.values()]
        for members, idx in groups:
            p = verts[idx]  # (g, k, 3)
            n = polygon_normals(p)  # Newell: 2 * area * normal
            norm = np.linalg.norm(n, axis=1, keepdims=True)
            n = np.where(norm > 0, n / np.maximum(norm, 1e-12), np.array([0.0, -1.0, 0.0]))
            c = p.mean(axis=1)
            flip = np.einsum("ij,ij->i", n, c - centroid) < 0
            n[flip] = -n[flip]
            normals[members] = n
            centers[members] = c
        base = np.asarray(color, dtype=np.float64)
        first = len(self._faces)
        for i, poly in enumerate(polys):
            col = base if face_colors is None or i not in face_colors else np.asarray(face_colors[i], np.float64)
            self._faces.append(np.asarray(poly, dtype=np.int64) + start)
            self._colors.append(col)
        self._normals.extend(normals)
        self._centers.extend(centers)
        self._classes.extend([int(cls)] * len(polys))
        self._tracks.extend([int(track)] * len(polys))
        return list(range(first, len(self._faces)))

    # Part shapes. Heights h are metres above the ground (y = -h).
    def box(self, x0, x1, h0, h1, z0, z1, color, cls, track, face_colors: dict[str, object] | None = None
            ) -> dict[str, int]:
        v = np.array([[x, -h, z] for x in (x0, x1) for h in (h0, h1) for z in (z0, z1)])
        # vertex index = 4*ix + 2*ih + iz
        polys = {"-x": [0, 1, 3, 2], "+x": [4, 6, 7, 5], "bottom": [0, 4, 5, 1], "top": [2, 3, 7, 6],
                 "-z": [0, 2, 6, 4], "+z": [1, 5, 7, 3]}
        keys = list(polys)
        fc = None
        if face_colors:
            fc = {keys.index(k): c for k, c in face_colors.items()}
        ids = self.part(v, [polys[k] for k in keys], color, cls, track, fc)
        return dict(zip(keys, ids))

    def prism_x(self, profile_zh, x0, x1, color, cls, track, face_colors: dict[int, object] | None = None,
                skip_sides: frozenset[int] = frozenset()) -> list[int]:
        """Extrude a convex (z, h) outline along x; faces: cap at x0, cap at x1, then the sides
        (side i joins outline points i and i+1; ``skip_sides`` leaves hidden ones out)."""
        p = np.asarray(profile_zh, dtype=np.float64)
        k = len(p)
        v = np.concatenate([np.stack([np.full(k, x0), -p[:, 1], p[:, 0]], 1),
                            np.stack([np.full(k, x1), -p[:, 1], p[:, 0]], 1)])
        polys = [list(range(k)), list(range(k, 2 * k))]
        polys += [[i, (i + 1) % k, k + (i + 1) % k, k + i] for i in range(k) if i not in skip_sides]
        return self.part(v, polys, color, cls, track, face_colors)

    def prism_z(self, profile_xh, z0, z1, color, cls, track, face_colors: dict[int, object] | None = None
                ) -> list[int]:
        """Extrude a convex (x, h) outline along z; faces: cap at z0, cap at z1, then the sides."""
        p = np.asarray(profile_xh, dtype=np.float64)
        k = len(p)
        v = np.concatenate([np.stack([p[:, 0], -p[:, 1], np.full(k, z0)], 1),
                            np.stack([p[:, 0], -p[:, 1], np.full(k, z1)], 1)])
        polys = [list(range(k)), list(range(k, 2 * k))]
        polys += [[i, (i + 1) % k, k + (i + 1) % k, k + i] for i in range(k)]
        return self.part(v, polys, color, cls, track, face_colors)

    def card_x(self, profile_zh, x, color, cls, track) -> list[int]:
        """A flat convex (z, h) polygon in the plane X = x, visible from both sides (two faces)."""
        p = np.asarray(profile_zh, dtype=np.float64)
        v = np.stack([np.full(len(p), x), -p[:, 1], p[:, 0]], 1)
        ids = []
        for sign in (1.0, -1.0):  # each face gets its own normal, one per side
            start = self._add_verts(v)
            self._faces.append(np.arange(len(p), dtype=np.int64) + start)
            self._normals.append(np.array([sign, 0.0, 0.0]))
            self._centers.append(v.mean(axis=0))
            self._colors.append(np.asarray(color, np.float64))
            self._classes.append(int(cls))
            self._tracks.append(int(track))
            ids.append(len(self._faces) - 1)
        return ids

    def column(self, x, z, radius, h0, h1, color, cls, track, sides: int = 4) -> list[int]:
        """A vertical regular prism (poles, trunks); faces: bottom, top, sides."""
        a = np.arange(sides) * 2 * math.pi / sides + (math.pi / sides if sides != 4 else 0.0)
        prof = np.stack([x + radius * np.cos(a), z + radius * np.sin(a)], 1)
        k = sides
        v = np.concatenate([np.stack([prof[:, 0], np.full(k, -h0), prof[:, 1]], 1),
                            np.stack([prof[:, 0], np.full(k, -h1), prof[:, 1]], 1)])
        polys = [list(range(k)), list(range(k, 2 * k))]
        polys += [[i, (i + 1) % k, k + (i + 1) % k, k + i] for i in range(k)]
        return self.part(v, polys, color, cls, track)

    def wheel(self, x0, x1, z, radius, color, cls, track, hub_color=None, sides: int = 8,
              cut_h: float | None = None) -> list[int]:
        """A wheel (regular prism along x) resting on the ground; ``cut_h`` drops what lies above that
        height (hidden inside the body anyway), which saves faces."""
        a = np.arange(sides) * 2 * math.pi / sides + math.pi / sides
        hc = radius * math.cos(math.pi / sides)  # the flat bottom edge rests on the ground
        prof = np.stack([z + radius * np.cos(a), hc + radius * np.sin(a)], 1)
        prof[np.abs(prof[:, 1]) < 1e-9, 1] = 0.0
        skip: frozenset[int] = frozenset()
        if cut_h is not None and cut_h < hc + radius * 0.9:
            prof = _clip_profile_below(prof, cut_h)
            at_cut = np.abs(prof[:, 1] - cut_h) < 1e-9
            skip = frozenset(i for i in range(len(prof)) if at_cut[i] and at_cut[(i + 1) % len(prof)])
        ids = self.prism_x(prof, x0, x1, color, cls, track, skip_sides=skip)
        if hub_color is not None:
            for cap, xx in ((ids[0], x0), (ids[1], x1)):
                hub = np.stack([z + 0.55 * radius * np.cos(a), hc + 0.55 * radius * np.sin(a)], 1)
                if cut_h is not None:
                    hub = _clip_profile_below(hub, cut_h)
                if len(hub) >= 3:
                    self.detail(cap, np.stack([np.full(len(hub), xx), -hub[:, 1], hub[:, 0]], 1)[None], hub_color)
        return ids

    def limb(self, a_zh, b_zh, thickness, x0, x1, color, cls, track) -> list[int]:
        """A slanted bar from point a to point b in the (z, h) plane, extruded along x."""
        a = np.asarray(a_zh, dtype=np.float64)
        b = np.asarray(b_zh, dtype=np.float64)
        d = b - a
        n = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d))) * thickness / 2
        prof = np.array([a + n, b + n, b - n, a - n])
        return self.prism_x(prof, x0, x1, color, cls, track)

    def detail(self, parent: int, polys_3d: np.ndarray, color) -> None:
        polys_3d = np.asarray(polys_3d, dtype=np.float64)
        if polys_3d.size == 0:
            return
        m, k, _ = polys_3d.shape
        start = self._add_verts(polys_3d.reshape(-1, 3))
        self._details.append(DetailGroup(parent, (np.arange(m * k) + start).reshape(m, k),
                                         np.asarray(color, dtype=np.float64)))

    def inset(self, face: int, margin: float, color) -> None:
        """A detail: face ``face`` shrunk towards its centre by ``margin`` (0..1)."""
        v = np.concatenate(self._verts)[self._faces[face]]
        c = v.mean(axis=0)
        self.detail(face, (c + (v - c) * (1.0 - margin))[None], color)

    def billboard(self, center, radius, shape, color) -> None:
        self._bb.append((np.asarray(center, np.float64), float(radius), np.asarray(shape, np.float64),
                         np.asarray(color, np.float64)))

    def animate(self, v0: int, f0: int, pivot, amplitude_rad: float, phase: float) -> None:
        """Everything added since (v0, f0) swings about the x axis through ``pivot``."""
        self._anims.append(Anim(v0, self._n, f0, len(self._faces), np.asarray(pivot, np.float64),
                                float(amplitude_rad), float(phase)))

    def build(self, billboard_class: int = VEGETATION) -> Mesh:
        verts = np.concatenate(self._verts) if self._verts else np.zeros((0, 3))
        bb = None
        if self._bb:
            k = max(len(s) for _, _, s, _ in self._bb)
            shapes = np.stack([np.resize(s, (k, 2)) if len(s) != k else s for _, _, s, _ in self._bb])
            bb = Billboards(np.stack([c for c, _, _, _ in self._bb]), np.array([r for _, r, _, _ in self._bb]),
                            shapes, np.stack([c for _, _, _, c in self._bb]), billboard_class)
        pts = verts
        if bb is not None:
            r = bb.radii[:, None]
            pts = np.concatenate([verts, bb.centers - r, bb.centers + r])
        aabb = np.array([pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max(),
                         pts[:, 2].min(), pts[:, 2].max()])
        kmax = FACE_PAD
        if any(len(f) > kmax for f in self._faces):
            raise ValueError(f"faces have at most {FACE_PAD} vertices")
        face_pad = np.zeros((0, kmax), np.int64)
        if self._faces:  # each face's indices, padded by repeating its last one
            lengths = np.array([len(f) for f in self._faces])
            starts = np.cumsum(lengths) - lengths
            face_pad = np.concatenate(self._faces).astype(np.int64, copy=False)[
                starts[:, None] + np.minimum(np.arange(kmax), lengths[:, None] - 1)]
        return Mesh(verts, self._faces, np.array(self._normals).reshape(-1, 3),
                    np.array(self._centers).reshape(-1, 3), np.array(self._colors).reshape(-1, 3),
                    np.array(self._classes, dtype=np.int64), np.array(self._tracks, dtype=np.int64),
                    self._details, bb, self._anims, aabb, face_pad)


def _clip_profile_below(prof: np.ndarray, h_max: float) -> np.ndarray:
    """Clip a convex (z, h) outline to h <= h_max (Sutherland-Hodgman, one edge)."""
    out = []
    k = len(prof)
    for i in range(k):
        a, b = prof[i], prof[(i + 1) % k]
        ina, inb = a[1] <= h_max, b[1] <= h_max
        if ina:
            out.append(a)
        if ina != inb:
            t = (h_max - a[1]) / (b[1] - a[1])
            out.append(a + t * (b - a))
    return np.array(out)


# A rectangle (u0, u1, h0, h1)'s corners in order: (u0, h0), (u1, h0), (u1, h1), (u0, h1).
_RECT_U = [0, 1, 1, 0]
_RECT_H = [2, 2, 3, 3]


def rects_x(x: float, rects_zh: np.ndarray) -> np.ndarray:
    """Rectangles (z0, z1, h0, h1) on the plane X = x -> (m, 4, 3) polygons."""
    r = np.asarray(rects_zh, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(r), 4, 3))
    out[:, :, 0] = x
    out[:, :, 1] = -r[:, _RECT_H]
    out[:, :, 2] = r[:, _RECT_U]
    return out


def rects_z(z: float, rects_xh: np.ndarray) -> np.ndarray:
    """Rectangles (x0, x1, h0, h1) on the plane Z = z -> (m, 4, 3) polygons."""
    r = np.asarray(rects_xh, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(r), 4, 3))
    out[:, :, 0] = r[:, _RECT_U]
    out[:, :, 1] = -r[:, _RECT_H]
    out[:, :, 2] = z
    return out


def blob_shape(rng: np.random.Generator, k: int = 11) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, k, endpoint=False) + rng.uniform(-0.15, 0.15, k)
    r = rng.uniform(0.78, 1.0, k)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


# --------------------------------------------------------------------------- things

@dataclass
class ThingModel:
    """A thing's mesh plus what planning and annotation need to know about it."""

    mesh: Mesh
    kind: str
    tracks: tuple[tuple[int, int], ...]  # (track id, class id)
    core_box: tuple[float, float, float, float, float, float]  # x0,x1,h0,h1,z0,z1: solid part (occluders)
    length_m: float
    width_m: float
    lod: Mesh | None = None  # fewer faces, same silhouette at small sizes, same track ids
    far: Mesh | None = None  # one box per track, for things a few pixels tall (made by make_actor)


def _dark(c, f: float) -> np.ndarray:
    return np.asarray(c, dtype=np.float64) * f


def build_car(rng: np.random.Generator, tid: int) -> ThingModel:
    b = MeshBuilder()
    style = rng.random()
    if style < 0.15:  # van / SUV
        L, W, H = rng.uniform(4.4, 5.0), rng.uniform(1.8, 1.95), rng.uniform(1.75, 2.0)
    elif style < 0.3:  # small
        L, W, H = rng.uniform(3.5, 3.9), rng.uniform(1.6, 1.7), rng.uniform(1.45, 1.55)
    else:
        L, W, H = rng.uniform(4.0, 4.8), rng.uniform(1.7, 1.85), rng.uniform(1.4, 1.5)
    col = tx.car_color(rng)
    glass = np.array([40, 48, 58]) * rng.uniform(0.8, 1.3)
    tyre = np.array([28, 28, 30])
    r = rng.uniform(0.3, 0.34)
    for sx in (-1, 1):
        for sz in (-1, 1):
            xa = sx * (W / 2 - 0.02)
            b.wheel(min(xa, xa - sx * 0.2), max(xa, xa - sx * 0.2), sz * (L / 2 - 0.78), r, tyre, CAR, tid,
                    hub_color=(150, 150, 152), cut_h=0.36)
    body_top = rng.uniform(0.82, 0.95) if style >= 0.15 else rng.uniform(0.95, 1.1)
    f = b.box(-W / 2, W / 2, 0.3, body_top, -L / 2, L / 2, col, CAR, tid)
    # rear: lights and plate; front: head lights and plate (z+ is the front)
    lights = rects_z(-L / 2, [[-W / 2 + 0.08, -W / 2 + 0.42, body_top - 0.22, body_top - 0.07],
                               [W / 2 - 0.42, W / 2 - 0.08, body_top - 0.22, body_top - 0.07]])
    b.detail(f["-z"], lights, (170, 20, 20))
    b.detail(f["-z"], rects_z(-L / 2, [[-0.26, 0.26, 0.42, 0.54]]), (225, 225, 220))
    b.detail(f["+z"], rects_z(L / 2, [[-W / 2 + 0.1, -W / 2 + 0.4, body_top - 0.2, body_top - 0.08],
                                        [W / 2 - 0.4, W / 2 - 0.1, body_top - 0.2, body_top - 0.08]]),
             (235, 232, 200))
    b.detail(f["+z"], rects_z(L / 2, [[-0.26, 0.26, 0.4, 0.52]]), (225, 225, 220))
    b.detail(f["-z"], rects_z(-L / 2, [[-W / 2, W / 2, 0.3, 0.42]]), _dark(col, 0.55))
    # cabin: trapezoid in (z, h), glass all round with a roof in body colour
    rear = -L / 2 + rng.uniform(0.35, 0.7) if style >= 0.15 else -L / 2 + rng.uniform(0.7, 1.0)
    front = L / 2 - (rng.uniform(0.6, 0.9) if style < 0.15 else rng.uniform(1.2, 1.5))
    prof = [(rear, body_top), (front, body_top), (front - rng.uniform(0.5, 0.8), H), (rear + rng.uniform(0.2, 0.5), H)]
    cab = b.prism_x(prof, -W / 2 + 0.07, W / 2 - 0.07, col, CAR, tid)
    for face in (cab[0], cab[1], cab[2], cab[4]):  # sides, windscreen, rear window
        b.inset(face, 0.16, glass)
    return ThingModel(b.build(), "car", ((tid, CAR),), (-W / 2, W / 2, 0.3, body_top, -L / 2, L / 2), L, W)


def build_bus(rng: np.random.Generator, tid: int) -> ThingModel:
    b = MeshBuilder()
    L, W, H = rng.uniform(10.5, 13.0), 2.55, rng.uniform(3.0, 3.3)
    col = tx.bus_color(rng)
    glass = np.array([35, 42, 52]) * rng.uniform(0.8, 1.2)
    tyre = np.array([25, 25, 27])
    for sz in (-1, 1):
        for sx in (-1, 1):
            xa = sx * (W / 2 - 0.03)
            b.wheel(min(xa, xa - sx * 0.3), max(xa, xa - sx * 0.3), sz * (L / 2 - 2.6), 0.5, tyre, BUS, tid,
                    hub_color=(140, 140, 140), cut_h=0.4)
    b.box(-W / 2 + 0.15, W / 2 - 0.15, 0.12, 0.35, -L / 2 + 0.3, L / 2 - 0.3, (30, 30, 32), BUS, tid)
    f = b.box(-W / 2, W / 2, 0.3, H, -L / 2, L / 2, col, BUS, tid,
              face_colors={"top": _dark(col, 0.9)})
    n_win = int(L / 1.6)
    zs = np.linspace(-L / 2 + 0.5, L / 2 - 2.0, n_win + 1)
    win = np.array([[zs[i] + 0.08, zs[i + 1] - 0.08, 1.35, 2.6] for i in range(n_win)])
    for side, face in ((-W / 2, f["-x"]), (W / 2, f["+x"])):
        b.detail(face, rects_x(side, win), glass)
        b.detail(face, rects_x(side, [[L / 2 - 1.8, L / 2 - 0.6, 0.45, 2.7]]), _dark(glass, 0.9))  # door
        b.detail(face, rects_x(side, [[-L / 2, L / 2, 0.3, 0.55]]), _dark(col, 0.6))
    b.detail(f["+z"], rects_z(L / 2, [[-W / 2 + 0.1, W / 2 - 0.1, 1.1, 2.6]]), glass)
    b.detail(f["+z"], rects_z(L / 2, [[-W / 2 + 0.3, W / 2 - 0.3, 2.7, 3.0]]), (230, 140, 20))
    b.detail(f["-z"], rects_z(-L / 2, [[-W / 2 + 0.3, W / 2 - 0.3, 1.9, 2.7]]), glass)
    b.detail(f["-z"], rects_z(-L / 2, [[-W / 2 + 0.1, -W / 2 + 0.4, 0.6, 0.9], [W / 2 - 0.4, W / 2 - 0.1, 0.6, 0.9]]),
             (170, 20, 20))
    return ThingModel(b.build(), "bus", ((tid, BUS),), (-W / 2, W / 2, 0.3, H, -L / 2, L / 2), L, W)


def build_truck(rng: np.random.Generator, tid: int) -> ThingModel:
    b = MeshBuilder()
    box_len = rng.uniform(5.5, 8.0)
    cab_len = rng.uniform(1.9, 2.3)
    L = box_len + cab_len + 0.3
    W = 2.5
    H = rng.uniform(3.2, 3.8)
    cab_h = rng.uniform(2.7, 3.0)
    cab_col, box_col = tx.truck_colors(rng)
    tyre = np.array([25, 25, 27])
    z_cab0 = L / 2 - cab_len
    axles = [L / 2 - 1.2, -L / 2 + 1.5] + ([-L / 2 + 2.9] if box_len > 7 else [])
    for z in axles:
        for sx in (-1, 1):
            xa = sx * (W / 2 - 0.03)
            b.wheel(min(xa, xa - sx * 0.35), max(xa, xa - sx * 0.35), z, 0.5, tyre, TRUCK, tid,
                    hub_color=(130, 130, 130), cut_h=0.62)
    # side skirts between the axles and a chassis keep the underside closed
    b.box(-W / 2 + 0.1, W / 2 - 0.1, 0.15, 0.6, -L / 2 + 2.05 + (1.4 if box_len > 7 else 0), L / 2 - 1.75,
          (40, 40, 42), TRUCK, tid)
    b.box(-W / 2 + 0.1, W / 2 - 0.1, 0.15, 0.55, -L / 2 + 0.2, -L / 2 + 0.95, (40, 40, 42), TRUCK, tid)
    fb = b.box(-W / 2, W / 2, 0.55, H, -L / 2, -L / 2 + box_len, box_col, TRUCK, tid)
    b.detail(fb["-z"], rects_z(-L / 2, [[-0.02, 0.02, 0.6, H - 0.1]]), _dark(box_col, 0.6))  # door seam
    b.detail(fb["-z"], rects_z(-L / 2, [[-W / 2 + 0.1, -W / 2 + 0.35, 0.65, 0.85], [W / 2 - 0.35, W / 2 - 0.1, 0.65, 0.85]]),
             (170, 20, 20))
    if rng.random() < 0.5:
        stripe = tx.car_color(rng)
        for side, face in ((-W / 2, fb["-x"]), (W / 2, fb["+x"])):
            b.detail(face, rects_x(side, [[-L / 2 + 0.5, -L / 2 + box_len - 0.5, 1.6, 2.3]]), stripe)
    fc = b.box(-W / 2 + 0.05, W / 2 - 0.05, 0.55, cab_h, z_cab0, L / 2, cab_col, TRUCK, tid)
    glass = np.array([40, 48, 58])
    b.detail(fc["+z"], rects_z(L / 2, [[-W / 2 + 0.15, W / 2 - 0.15, 1.6, cab_h - 0.2]]), glass)
    for side, face in ((-W / 2 + 0.05, fc["-x"]), (W / 2 - 0.05, fc["+x"])):
        b.detail(face, rects_x(side, [[z_cab0 + 0.3, L / 2 - 0.2, 1.6, cab_h - 0.25]]), glass)
    core = (-W / 2, W / 2, 0.55, H, -L / 2, -L / 2 + box_len)
    return ThingModel(b.build(), "truck", ((tid, TRUCK),), core, L, W)


@dataclass(frozen=True)
class _PersonLook:
    height: float
    shirt: np.ndarray
    pants: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    shoe: np.ndarray
    arm: np.ndarray
    half_w: float
    swing_rad: float
    backpack: np.ndarray | None


def _person_look(rng: np.random.Generator, walking: bool, height: float | None = None) -> _PersonLook:
    hh = height if height is not None else rng.uniform(1.55, 1.92)
    shirt = tx.clothes_color(rng)
    skin = tx.skin_color(rng)
    return _PersonLook(
        height=hh, shirt=shirt, pants=tx.clothes_color(rng), skin=skin, hair=tx.hair_color(rng),
        shoe=np.array([30.0, 28.0, 28.0]) * rng.uniform(0.8, 2.5), arm=shirt if rng.random() < 0.7 else skin,
        half_w=rng.uniform(0.17, 0.21) * (hh / 1.75), swing_rad=math.radians(rng.uniform(18, 28)) if walking else 0.0,
        backpack=tx.clothes_color(rng) if rng.random() < 0.25 else None)


def _person_parts(b: MeshBuilder, lk: _PersonLook, tid: int, cls: int, detailed: bool = True) -> None:
    """Standing or walking person (limbs swing when ``lk.swing_rad`` > 0); ``detailed=False`` merges
    arms into the torso for people that are small on screen."""
    hh = lk.height
    hip = 0.5 * hh
    sh = 0.81 * hh
    leg_w = 0.13 * (hh / 1.75)
    for sx, ph in ((-1, 0.0), (1, math.pi)):
        v0, f0 = b.num_verts, b.num_faces
        x0 = sx * 0.095 - leg_w / 2
        f = b.box(x0, x0 + leg_w, 0.0, hip + 0.02, -0.08, 0.09, lk.pants, cls, tid)
        if detailed:
            b.detail(f["-z"], rects_z(-0.08, [[x0, x0 + leg_w, 0.0, 0.09]]), lk.shoe)
            b.detail(f["+z"], rects_z(0.09, [[x0, x0 + leg_w, 0.0, 0.09]]), lk.shoe)
            b.detail(f["-x"], rects_x(x0, [[-0.08, 0.09, 0.0, 0.09]]), lk.shoe)
            b.detail(f["+x"], rects_x(x0 + leg_w, [[-0.08, 0.09, 0.0, 0.09]]), lk.shoe)
        if lk.swing_rad:
            b.animate(v0, f0, (0.0, -hip, 0.0), lk.swing_rad, ph)
    if detailed:
        b.box(-lk.half_w, lk.half_w, hip - 0.02, sh + 0.02, -0.11, 0.11, lk.shirt, cls, tid)
        for sx, ph in ((-1, math.pi), (1, 0.0)):
            v0, f0 = b.num_verts, b.num_faces
            x0 = sx * (lk.half_w + 0.045) - 0.045
            b.box(x0, x0 + 0.09, hip - 0.05, sh, -0.05, 0.05, lk.arm, cls, tid)
            if lk.swing_rad:
                b.animate(v0, f0, (0.0, -sh, 0.0), lk.swing_rad * 0.8, ph)
    else:
        w = lk.half_w + 0.09
        f = b.box(-w, w, hip - 0.05, sh + 0.02, -0.11, 0.11, lk.shirt, cls, tid)
    b.box(-0.095, 0.095, sh + 0.01, hh, -0.105, 0.105, lk.skin, cls, tid,
          face_colors={"top": lk.hair, "-z": lk.hair})
    if lk.backpack is not None:
        b.box(-lk.half_w + 0.04, lk.half_w - 0.04, hip + 0.12, sh - 0.04, -0.27, -0.1, lk.backpack, cls, tid)


def _rider_parts(b: MeshBuilder, lk: _PersonLook, tid: int, z_off: float, seat: float) -> None:
    """A seated rider: thighs forward, shins down to the pedals/pegs, torso leaning forward."""
    leg_w = 0.13 * (lk.height / 1.75)
    for sx, ph in ((-1, 0.0), (1, math.pi)):
        x0 = sx * 0.1 - leg_w / 2
        knee = (z_off + 0.38 + 0.06 * math.sin(ph), seat + 0.05 + 0.1 * math.cos(ph))
        b.limb((z_off, seat), knee, 0.15, x0, x0 + leg_w, lk.pants, RIDER, tid)
        b.limb(knee, (z_off + 0.33, max(0.15, seat - 0.5 + 0.12 * math.cos(ph))), 0.12, x0, x0 + leg_w, lk.pants,
               RIDER, tid)
    top = (z_off + 0.35, seat + 0.62)
    b.limb((z_off - 0.02, seat + 0.05), top, 0.3, -lk.half_w, lk.half_w, lk.shirt, RIDER, tid)
    for sx in (-1, 1):
        x0 = sx * (lk.half_w + 0.02) - 0.045
        b.limb(top, (z_off + 0.7, seat + 0.32), 0.09, x0, x0 + 0.09, lk.arm, RIDER, tid)
    hz, hh = top[0] + 0.06, top[1] + 0.04
    b.box(-0.095, 0.095, hh, hh + 0.24, hz - 0.1, hz + 0.11, lk.skin, RIDER, tid,
          face_colors={"top": lk.hair, "-z": lk.hair})


def build_person(rng: np.random.Generator, tid: int, walking: bool) -> ThingModel:
    lk = _person_look(rng, walking)
    full, lod = MeshBuilder(), MeshBuilder()
    _person_parts(full, lk, tid, PERSON, detailed=True)
    _person_parts(lod, lk, tid, PERSON, detailed=False)
    return ThingModel(full.build(), "person", ((tid, PERSON),), (-0.2, 0.2, 0.0, 1.6, -0.1, 0.1), 0.4, 0.5,
                      lod=lod.build())


def _bicycle_parts(b: MeshBuilder, rng: np.random.Generator, tid: int) -> None:
    """Wheels and frame as flat cards in the bicycle's plane (a bicycle is all but flat), plus
    handlebar and saddle."""
    col = tx.car_color(rng)
    tyre = np.array([22, 22, 24])
    r = 0.34
    a = np.arange(8) * math.pi / 4 + math.pi / 8
    hc = r * math.cos(math.pi / 8)
    for z in (-0.52, 0.52):
        ring = np.stack([z + r * np.cos(a), hc + r * np.sin(a)], 1)
        ring[np.abs(ring[:, 1]) < 1e-9, 1] = 0.0
        ids = b.card_x(ring, 0.0, tyre, BICYCLE, tid)
        hub = np.stack([np.zeros(8), -(hc + 0.78 * r * np.sin(a)), z + 0.78 * r * np.cos(a)], 1)
        for f in ids:
            b.detail(f, hub[None], np.array([70.0, 70.0, 72.0]))
    frame = [(-0.5, hc + 0.02), (0.02, hc + 0.02), (0.45, 0.88), (-0.14, 0.9)]
    ids = b.card_x(frame, 0.0, col, BICYCLE, tid)
    hole = np.array([[-0.3, hc + 0.12], [-0.02, hc + 0.12], [0.28, 0.8], [-0.12, 0.8]])
    hole3 = np.stack([np.zeros(4), -hole[:, 1], hole[:, 0]], 1)
    for f in ids:
        b.detail(f, hole3[None], tyre * 0.0 + 60.0)  # the see-through triangle, darkened
    b.limb((0.45, 0.9), (0.52, hc), 0.05, -0.03, 0.03, col, BICYCLE, tid)  # fork
    b.box(-0.3, 0.3, 0.97, 1.02, 0.4, 0.46, (40, 40, 40), BICYCLE, tid)  # handlebar
    b.box(-0.08, 0.08, 0.92, 0.97, -0.2, -0.02, (30, 30, 30), BICYCLE, tid)  # saddle


def build_bicycle(rng: np.random.Generator, tid: int) -> ThingModel:
    b = MeshBuilder()
    _bicycle_parts(b, rng, tid)
    return ThingModel(b.build(), "bicycle", ((tid, BICYCLE),), (-0.03, 0.03, 0.0, 0.9, -0.8, 0.8), 1.75, 0.6)


def build_cyclist(rng: np.random.Generator, tid_bike: int, tid_rider: int) -> ThingModel:
    b = MeshBuilder()
    _bicycle_parts(b, rng, tid_bike)
    _rider_parts(b, _person_look(rng, False, rng.uniform(1.6, 1.9)), tid_rider, z_off=-0.12, seat=0.95)
    return ThingModel(b.build(), "cyclist", ((tid_bike, BICYCLE), (tid_rider, RIDER)),
                      (-0.03, 0.03, 0.0, 0.9, -0.8, 0.8), 1.75, 0.6)


def build_motorcyclist(rng: np.random.Generator, tid_moto: int, tid_rider: int | None) -> ThingModel:
    b = MeshBuilder()
    col = tx.car_color(rng)
    tyre = np.array([22, 22, 24])
    for z in (-0.7, 0.72):
        b.wheel(-0.07, 0.07, z, 0.31, tyre, MOTORCYCLE, tid_moto, hub_color=(150, 150, 150))
    b.box(-0.17, 0.17, 0.3, 0.68, -0.35, 0.45, (45, 45, 48), MOTORCYCLE, tid_moto)  # engine
    b.limb((-0.6, 0.78), (0.5, 0.9), 0.26, -0.2, 0.2, col, MOTORCYCLE, tid_moto)  # tank + seat
    b.limb((0.55, 0.95), (0.75, 0.35), 0.08, -0.1, 0.1, (90, 90, 95), MOTORCYCLE, tid_moto)  # fork
    b.box(-0.36, 0.36, 1.02, 1.07, 0.5, 0.56, (40, 40, 40), MOTORCYCLE, tid_moto)
    fr = b.box(-0.12, 0.12, 0.75, 0.9, -0.85, -0.7, (40, 40, 42), MOTORCYCLE, tid_moto)
    b.detail(fr["-z"], rects_z(-0.85, [[-0.08, 0.08, 0.78, 0.87]]), (180, 20, 20))
    tracks: tuple[tuple[int, int], ...] = ((tid_moto, MOTORCYCLE),)
    if tid_rider is not None:
        _rider_parts(b, _person_look(rng, False, rng.uniform(1.65, 1.9)), tid_rider, z_off=-0.3, seat=0.9)
        tracks += ((tid_rider, RIDER),)
    return ThingModel(b.build(), "motorcyclist" if tid_rider else "motorcycle", tracks,
                      (-0.17, 0.17, 0.3, 0.9, -0.35, 0.45), 2.1, 0.8)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Lane:
    x_m: float  # centre
    width_m: float
    direction: int  # +1 with the ego, -1 oncoming, 0 parked
    kind: str  # "drive", "parking", "bike"


@dataclass(frozen=True)
class GroundRect:
    """A coplanar region on the ground (labelled ``class_id`` unless it is a marking)."""

    x0: float
    x1: float
    z0: float
    z1: float
    class_id: int  # VOID-free: markings carry ROAD
    color: tuple[float, float, float]
    label: bool  # False: image-only (markings, patches)
    reach_m: float = float("inf")  # not drawn farther ahead than this (fine texture)


@dataclass
class StreetLayout:
    lanes: list[Lane]
    ego_lane: int
    road_left_m: float
    road_right_m: float
    kerb_m: float  # kerb width
    lawn_left_m: float  # tree-lawn (terrain) width next to the kerb, 0 = none
    lawn_right_m: float
    sidewalk_left_m: float  # whole width between kerb and property line
    sidewalk_right_m: float

    @property
    def property_left_m(self) -> float:
        return self.road_left_m - self.kerb_m - self.sidewalk_left_m

    @property
    def property_right_m(self) -> float:
        return self.road_right_m + self.kerb_m + self.sidewalk_right_m

    def walk_band(self, side: int) -> tuple[float, float]:
        """x range where pedestrians walk on the left (-1) or right (+1) sidewalk."""
        if side < 0:
            return (self.property_left_m + 0.4, self.road_left_m - self.kerb_m - self.lawn_left_m - 0.4)
        return (self.road_right_m + self.kerb_m + self.lawn_right_m + 0.4, self.property_right_m - 0.4)


def sample_layout(rng: np.random.Generator) -> StreetLayout:
    lane_w = rng.uniform(3.0, 3.6)
    n_same = int(rng.choice([1, 2], p=[0.4, 0.6]))
    n_onc = int(rng.choice([1, 2], p=[0.5, 0.5]))
    lanes: list[Lane] = []
    for i in range(n_onc):
        lanes.append(Lane(-lane_w * (i + 0.5), lane_w, -1, "drive"))
    for i in range(n_same):
        lanes.append(Lane(lane_w * (i + 0.5), lane_w, 1, "drive"))
    left, right = -lane_w * n_onc, lane_w * n_same
    for side in (-1, 1):
        edge = left if side < 0 else right
        if rng.random() < (0.55 if side < 0 else 0.7):
            w = rng.uniform(2.1, 2.5)
            lanes.append(Lane(edge + side * w / 2, w, 0, "parking"))
            edge += side * w
        if rng.random() < 0.3:
            w = rng.uniform(1.4, 1.8)
            lanes.append(Lane(edge + side * w / 2, w, side, "bike"))
            edge += side * w
        if side < 0:
            left = edge
        else:
            right = edge
    lanes.sort(key=lambda ln: ln.x_m)
    same = [i for i, ln in enumerate(lanes) if ln.kind == "drive" and ln.direction > 0]
    ego_lane = same[int(rng.integers(len(same)))]
    lawn_l = rng.uniform(1.0, 1.8) if rng.random() < 0.35 else 0.0
    lawn_r = rng.uniform(1.0, 1.8) if rng.random() < 0.35 else 0.0
    return StreetLayout(lanes, ego_lane, left, right, 0.2, lawn_l, lawn_r,
                        lawn_l + rng.uniform(2.3, 4.5), lawn_r + rng.uniform(2.3, 4.5))


# --------------------------------------------------------------------------- actors and static units


@dataclass
class Actor:
    """A moving (or parked) thing: its model and its pose at every frame."""

    model: ThingModel
    pose: np.ndarray  # (N, 3): world x, world z, heading rad
    phase: np.ndarray  # (N,) animation phase, rad
    role: str  # "traffic", "lead", "parked", "sidewalk", "crossing", "occluder", "occludee", ...
    radius_m: float  # bounding radius of the footprint, for view-frustum culling


@dataclass
class StaticUnit:
    """A piece of stuff (building, pole, tree, fence segment, ...) already in world coordinates."""

    mesh: Mesh
    footprint: tuple[float, float, float, float]  # x0, x1, z0, z1


@dataclass(frozen=True)
class PlannedOcclusion:
    """A scripted full occlusion as planned (the rendered labels decide what is reported)."""

    occluder_track_id: int
    occludee_track_id: int
    start_frame: int
    end_frame: int


def contact_indices(mesh: Mesh, track: int) -> np.ndarray:
    """Vertices of the track's faces lying on the ground (for a rider: those of its vehicle); cached."""
    cache = mesh.__dict__.setdefault("_contact", {})
    if track not in cache:
        sel = np.flatnonzero(mesh.tracks == track)
        idx = np.unique(np.concatenate([mesh.faces[i] for i in sel])) if len(sel) else np.zeros(0, np.int64)
        on_ground = idx[mesh.verts[idx, 1] > -0.02]
        if len(on_ground) == 0:
            idx = np.unique(np.concatenate(mesh.faces))
            on_ground = idx[mesh.verts[idx, 1] > -0.02]
        cache[track] = on_ground
    return cache[track]


def far_mesh(mesh: Mesh) -> Mesh:
    """One box per track around that track's faces, coloured like its largest face: what a thing a few
    pixels tall looks like (such things are usually labelled void)."""
    b = MeshBuilder()
    for tid in mesh.track_ids:
        sel = np.flatnonzero(mesh.tracks == tid)
        idx = np.unique(np.concatenate([mesh.faces[i] for i in sel]))
        v = mesh.verts[idx]
        p = mesh.verts[mesh.face_pad[sel]]  # padding repeats the last vertex: adds nothing to the sum
        areas = np.linalg.norm(polygon_normals(p), axis=1)
        col = mesh.colors[sel[int(np.argmax(areas))]]
        b.box(v[:, 0].min(), v[:, 0].max(), -v[:, 1].max(), -v[:, 1].min(), v[:, 2].min(), v[:, 2].max(), col,
              int(mesh.classes[sel[0]]), tid)
    return b.build()


def make_actor(model: ThingModel, pose: np.ndarray, phase: np.ndarray, role: str) -> Actor:
    if model.far is None:
        model.far = far_mesh(model.mesh)
    a = model.mesh.aabb
    radius = float(np.hypot(max(abs(a[0]), abs(a[1])), max(abs(a[4]), abs(a[5])))) + 0.2
    return Actor(model, pose, phase, role, radius)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    seed: int
    num_frames: int
    config: SynthConfig
    layout: StreetLayout
    palette: StreetPalette
    look: SceneLook
    intrinsics: CameraIntrinsics
    camera_height_m: float
    pitch_rad: float
    ego: np.ndarray  # (N, 5): x, z, yaw, pitch, height
    actors: list[Actor]
    statics: list[StaticUnit]  # sorted by footprint z0
    ground: list[GroundRect]  # long strips (banded for haze when drawn)
    ground_details: list[GroundRect]  # short image-only or labelled rects (markings, patches, yards)
    planned: list[PlannedOcclusion]
    num_tracks: int

    def camera_at(self, k: int) -> tuple[CameraModel, np.ndarray, np.ndarray]:
        """(camera model of frame k, 3x3 world->optical rotation, camera centre in the world)."""
        x, z, yaw, pitch, h = self.ego[k]
        cam = CameraModel(self.intrinsics, CameraMounting(float(h), float(pitch)))
        c, s = math.cos(yaw), math.sin(yaw)
        ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # level -> world
        rot = cam.mounting.rotation_level_to_camera() @ ry.T
        return cam, rot, np.array([x, -h, z])


def _smooth_series(rng: np.random.Generator, n: int, fps: float, period_s: tuple[float, float], terms: int = 3
                   ) -> np.ndarray:
    """Sum of a few random sinusoids, roughly in [-1, 1]."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(terms):
        p = rng.uniform(*period_s)
        out += math.sqrt(2.0 / terms) * np.sin(2 * math.pi * t / p + rng.uniform(0, 2 * math.pi))
    return out


def simulate_ego(rng: np.random.Generator, layout: StreetLayout, n: int, cfg: SynthConfig,
                 h0: float, pitch0: float) -> np.ndarray:
    fps = cfg.fps
    lo, hi = cfg.ego_speed_mps
    base = rng.uniform(lo + 0.25 * (hi - lo), hi)
    v = base + 0.25 * (hi - lo) * _smooth_series(rng, n, fps, (6.0, 20.0))
    if rng.random() < 0.15 and n > 40:  # slow down almost to a stop for a while
        c = rng.uniform(0.3, 0.7) * n / fps
        w = rng.uniform(2.0, 5.0)
        t = np.arange(n) / fps
        v = v * (1.0 - 0.9 * np.exp(-0.5 * ((t - c) / w) ** 2))
    v = np.clip(v, lo, hi) if lo > 0 else np.clip(v, 0.0, hi)
    z = np.concatenate([[0.0], np.cumsum(v[:-1]) / fps])
    lane = layout.lanes[layout.ego_lane]
    x = lane.x_m + rng.uniform(0.0, 0.3) * _smooth_series(rng, n, fps, (5.0, 14.0), 2)
    # a lane change to a neighbouring lane of the same direction
    neighbours = [i for i, ln in enumerate(layout.lanes)
                  if ln.kind == "drive" and ln.direction > 0 and abs(i - layout.ego_lane) == 1]
    if neighbours and rng.random() < cfg.lane_change_probability and n > 50:
        target = layout.lanes[neighbours[int(rng.integers(len(neighbours)))]]
        t0 = rng.uniform(0.2, 0.7) * n
        dur = rng.uniform(2.5, 4.5) * fps
        s = np.clip((np.arange(n) - t0) / dur, 0.0, 1.0)
        x = x + (target.x_m - lane.x_m) * (3 * s ** 2 - 2 * s ** 3)
    dx = np.gradient(x) * fps if n >= 2 else np.zeros(n)
    yaw = np.arctan2(dx, np.maximum(v, 0.5))
    bounce = math.radians(cfg.pitch_bounce_deg) * _smooth_series(rng, n, fps, (0.5, 1.2), 2) * np.clip(v / 8, 0.3, 1)
    pitch = pitch0 + bounce
    h = h0 + 0.01 * _smooth_series(rng, n, fps, (0.4, 1.0), 2)
    return np.stack([x, z, yaw, pitch, h], axis=1)


class _LaneBook:
    """Occupied z-intervals (at t = 0) of each constant-speed lane, so vehicles never overlap."""

    def __init__(self) -> None:
        self.busy: dict[int, list[tuple[float, float]]] = {}

    def free(self, lane: int, z0: float, z1: float) -> bool:
        return all(z1 <= a or z0 >= b for a, b in self.busy.get(lane, []))

    def take(self, lane: int, z0: float, z1: float) -> None:
        self.busy.setdefault(lane, []).append((z0, z1))


def _ray_box_hidden(cam: np.ndarray, pts: np.ndarray, box_min: np.ndarray, box_max: np.ndarray) -> np.ndarray:
    """(N,3) cameras, (N,P,3) points, (N,3) boxes -> (N,P) bool: segment camera->point passes through the box."""
    d = (pts - cam[:, None, :]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.float32(1.0) / np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
        t0 = (box_min - cam).astype(np.float32)[:, None, :] * inv
        t1 = (box_max - cam).astype(np.float32)[:, None, :] * inv
    tmin = np.minimum(t0, t1).max(axis=2)
    tmax = np.maximum(t0, t1).min(axis=2)
    return (tmax >= tmin) & (tmax > 0) & (tmin < 0.98)


def _has_run(mask: np.ndarray, lo: int, hi: int) -> bool:
    """Whether ``mask`` holds a run of True between lo and hi long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    lengths = edges[1::2] - edges[0::2]
    return bool(((lengths >= lo) & (lengths <= hi)).any())


class WorldBuilder:
    """Samples one sequence's world from (seed, config)."""

    def __init__(self, seed: int, num_frames: int, cfg: SynthConfig) -> None:
        self.seed = int(seed)
        self.n = int(num_frames)
        self.cfg = cfg
        self.fps = cfg.fps
        self.next_id = 1
        self.actors: list[Actor] = []
        self.book = _LaneBook()
        self.planned: list[PlannedOcclusion] = []
        self._rots: tuple[np.ndarray, np.ndarray] | None = None
        self.yards: list[GroundRect] = []  # front yards of set-back buildings, filled with the buildings

    def new_id(self) -> int:
        t = self.next_id
        self.next_id += 1
        return t

    def rng(self, purpose: str, *extra: int) -> np.random.Generator:
        return rng_for(self.seed, purpose, *extra)

    # ------------------------------------------------------------------ build
    def build(self) -> World:
        cfg = self.cfg
        r = self.rng("camera")
        hfov = math.radians(r.uniform(*cfg.hfov_deg))
        fx = (cfg.width / 2) / math.tan(hfov / 2)
        self.intr = CameraIntrinsics(cfg.width, cfg.height, fx, fx, (cfg.width - 1) / 2, (cfg.height - 1) / 2)
        self.h0 = float(r.uniform(*cfg.camera_height_m))
        self.pitch0 = math.radians(float(r.uniform(*cfg.pitch_deg)))
        self.layout = sample_layout(self.rng("layout"))
        self.palette = tx.sample_street_palette(self.rng("palette"))
        self.look = tx.sample_look(self.rng("look"), cfg.fog_probability, cfg.rain_probability,
                                   cfg.overcast_probability, cfg.blur_probability, cfg.noise_sigma)
        self.ego = simulate_ego(self.rng("ego"), self.layout, self.n, cfg, self.h0, self.pitch0)
        self.t = np.arange(self.n) / self.fps
        self.z_lo = float(self.ego[:, 1].min()) - 40.0
        self.z_hi = float(self.ego[:, 1].max()) + cfg.view_distance_m + 30.0
        self.lane_speed = self._lane_speeds(self.rng("lane_speeds"))
        self.crossings = self._crosswalk_positions(self.rng("crosswalks"))
        self._plan_occlusions(self.rng("occlusions"))
        self._lead_vehicle(self.rng("lead"))
        self._lane_traffic(self.rng("traffic"))
        self._parked(self.rng("parked"))
        self._sidewalk_people(self.rng("people"))
        self._crossing_people(self.rng("crossing"))
        statics = self._statics(self.rng("statics"))
        ground, details = self._ground(self.rng("ground"))
        return World(self.seed, self.n, cfg, self.layout, self.palette, self.look, self.intr, self.h0,
                     self.pitch0, self.ego, self.actors, statics, ground, details, self.planned, self.next_id - 1)

    # ------------------------------------------------------------------ kinematics helpers
    def _lane_speeds(self, rng: np.random.Generator) -> dict[int, float]:
        out = {}
        for i, ln in enumerate(self.layout.lanes):
            if ln.kind == "drive":
                out[i] = ln.direction * rng.uniform(5.0, 14.0)
            elif ln.kind == "bike":
                out[i] = ln.direction * rng.uniform(3.0, 6.0)
            else:
                out[i] = 0.0
        return out

    def _in_lane_conflicts_ego(self, lane_idx: int, z_traj: np.ndarray, half_len: float) -> bool:
        """True if a vehicle on ``z_traj`` in lane ``lane_idx`` would touch the ego car at some frame."""
        ln = self.layout.lanes[lane_idx]
        ex, ez = self.ego[:, 0], self.ego[:, 1]
        in_lane = np.abs(ex - ln.x_m) < ln.width_m / 2 + 1.1
        if not in_lane.any():
            return False
        # ego body spans [ez - 3.6, ez + 1.2]; keep 3 m more on each side
        clash = (z_traj - half_len < ez + 4.2) & (z_traj + half_len > ez - 6.6)
        return bool((clash & in_lane).any())

    def _pose_lane(self, lane_idx: int, z0: float, speed: float | None = None, sway: float = 0.12,
                   rng: np.random.Generator | None = None) -> np.ndarray:
        ln = self.layout.lanes[lane_idx]
        v = self.lane_speed[lane_idx] if speed is None else speed
        z = z0 + v * self.t
        x = np.full(self.n, ln.x_m)
        if rng is not None and sway > 0:
            x = x + sway * _smooth_series(rng, self.n, self.fps, (4.0, 12.0), 2)
        heading = 0.0 if (ln.direction > 0 or (ln.direction == 0 and ln.x_m > 0)) else math.pi
        if ln.kind == "parking":
            heading = 0.0 if ln.x_m > 0 else math.pi
        return np.stack([x, z, np.full(self.n, heading)], 1)

    def _z_range_for_speed(self, v: float, margin_back: float = 40.0) -> tuple[float, float]:
        """Start positions (t = 0) of objects moving at v that are within view at some frame."""
        g = v * self.t - self.ego[:, 1]
        return float(-margin_back - g.max()), float(self.cfg.view_distance_m - g.min())

    def _vehicle_model(self, rng: np.random.Generator, kind: str, ids: tuple[int, int] | None = None) -> ThingModel:
        """A thing of ``kind``; ``ids`` gives its track ids (default: fresh ones)."""
        a, b = ids if ids is not None else (self.new_id(), 0)
        two = kind in ("motorcyclist", "cyclist")
        if two and ids is None:
            b = self.new_id()
        if kind == "car":
            return build_car(rng, a)
        if kind == "bus":
            return build_bus(rng, a)
        if kind == "truck":
            return build_truck(rng, a)
        if kind == "motorcyclist":
            return build_motorcyclist(rng, a, b)
        if kind == "motorcycle":
            return build_motorcyclist(rng, a, None)
        if kind == "cyclist":
            return build_cyclist(rng, a, b)
        if kind == "bicycle":
            return build_bicycle(rng, a)
        if kind in ("person_walk", "person_stand"):
            return build_person(rng, a, kind == "person_walk")
        raise ValueError(f"unknown thing kind {kind!r}")

    def _relabel(self, model: ThingModel) -> ThingModel:
        """Give a model built with placeholder ids (-1, -2) fresh track ids."""
        mapping = {t: self.new_id() for t, _ in model.tracks}
        tracks = model.mesh.tracks.copy()
        for old, new in mapping.items():
            tracks[model.mesh.tracks == old] = new
        mesh = dataclasses.replace(model.mesh, tracks=tracks)
        lod = model.lod
        if lod is not None:
            lod_tracks = lod.tracks.copy()
            for old, new in mapping.items():
                lod_tracks[lod.tracks == old] = new
            lod = dataclasses.replace(lod, tracks=lod_tracks)
        return dataclasses.replace(model, mesh=mesh, lod=lod,
                                   tracks=tuple((mapping[t], c) for t, c in model.tracks))

    # ------------------------------------------------------------------ scripted occlusions
    def _plan_occlusions(self, rng: np.random.Generator) -> None:
        n = self.n
        if n < 45 or self.cfg.occlusion_events_per_100_frames <= 0:
            return
        want = max(1, int(round(n / 100.0 * self.cfg.occlusion_events_per_100_frames)))
        cams = np.stack([self.ego[:, 0], -self.ego[:, 4], self.ego[:, 1]], 1)
        centres = sorted(rng.uniform(0.25, 0.75, want) * n) if want > 1 else [rng.uniform(0.3, 0.7) * n]
        for kc in centres:
            pool: dict[str, ThingModel] = {}  # candidate models with placeholder ids, built on demand
            for _attempt in range(30):
                if self._try_occlusion(rng, int(kc) + int(rng.integers(-8, 9)), cams, pool):
                    break

    def _pooled(self, pool: dict[str, ThingModel], kind: str, rng: np.random.Generator) -> ThingModel:
        if kind not in pool:
            pool[kind] = self._vehicle_model(np.random.default_rng(rng.integers(1 << 31)), kind, (-1, -2))
        return pool[kind]

    def _try_occlusion(self, rng: np.random.Generator, kc: int, cams: np.ndarray,
                       pool: dict[str, ThingModel]) -> bool:
        lay = self.layout
        n = self.n
        kc = int(np.clip(kc, 15, n - 15))
        ego_x = self.ego[kc, 0]
        # occluder: a bus or truck in a drive lane other than the ego's, or parked at the kerb
        cand = [i for i, ln in enumerate(lay.lanes) if i != lay.ego_lane and (
            (ln.kind == "drive" and abs(ln.x_m - ego_x) > ln.width_m * 0.6) or ln.kind == "parking")]
        if not cand:
            return False
        bl = cand[int(rng.integers(len(cand)))]
        bln = lay.lanes[bl]
        side = 1 if bln.x_m > ego_x else -1
        kind = "bus" if rng.random() < 0.5 else "truck"
        # occludee: something farther out on the same side
        options = []
        for i, ln in enumerate(lay.lanes):
            if i != lay.ego_lane and side * (ln.x_m - bln.x_m) > 1.8 and side * (ln.x_m - ego_x) > 0:
                options.append(("lane", i))
        options += [("sidewalk", side)] * 2
        what, where = options[int(rng.integers(len(options)))]
        b_model = self._pooled(pool, kind, rng)
        if what == "lane":
            oln = lay.lanes[where]
            okind = {"parking": "car", "bike": "cyclist"}.get(oln.kind)
            if okind is None:
                okind = "car" if rng.random() < 0.8 else "motorcyclist"
            o_model = self._pooled(pool, okind, rng)
            o_x = oln.x_m
            o_v = self._scenario_speed(rng, where, kc)
        else:
            walking = rng.random() < 0.8
            okind = "person_walk" if walking else "person_stand"
            o_model = self._pooled(pool, okind, rng)
            band = lay.walk_band(where)
            o_x = rng.uniform(*band)
            o_v = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.7) if walking else 0.0
        # place the occluder ahead; the occludee starts near the line of sight through the occluder's
        # centre, and a scan over its longitudinal offset finds where the occlusion works out
        b_v = self._scenario_speed(rng, bl, kc)
        dz_b = rng.uniform(5.0, 22.0)
        cx, cz = self.ego[kc, 0], self.ego[kc, 1]
        zb = cz + dz_b + b_v * (self.t - self.t[kc])
        ratio = (o_x - cx) / (bln.x_m - cx)
        offsets = np.linspace(-24.0, 24.0, 33) + rng.uniform(-0.7, 0.7)
        zo_all = cz + dz_b * ratio + offsets[:, None] + o_v * (self.t - self.t[kc])[None, :]  # (K, n)
        # the occluder may not touch the ego, nor other booked vehicles of its lane
        hb = b_model.length_m / 2
        if self._in_lane_conflicts_ego(bl, zb, hb + 1.0):
            return False
        zb0 = zb[0]
        if not self.book.free(bl, zb0 - hb - 4, zb0 + hb + 4):
            return False
        # exact test: every corner of the occludee's box hidden behind the occluder's core box
        x0, x1, h0, h1, z0, z1 = b_model.core_box
        heading_b = 0.0 if bln.direction > 0 or (bln.kind == "parking" and bln.x_m > 0) else math.pi
        if heading_b:
            z0, z1 = -z1, -z0
            x0, x1 = -x1, -x0
        # only a window of frames around kc is tested (long sequences stay cheap)
        w0, w1 = max(0, kc - 70), min(n, kc + 71)
        m = w1 - w0
        zbw = zb[w0:w1]
        bmin = np.stack([bln.x_m + np.full(m, x0), np.full(m, -h1), zbw + z0], 1)
        bmax = np.stack([bln.x_m + np.full(m, x1), np.full(m, -h0), zbw + z1], 1)
        a = o_model.mesh.aabb  # x0 x1 y0 y1 z0 z1 (local)
        corners = np.array([[x, y, z] for x in a[0:2] for y in a[2:4] for z in a[4:6]])
        K = len(offsets)
        base = np.stack([np.full((m, K), o_x), np.zeros((m, K)), zo_all[:, w0:w1].T], 2)  # (m, K, 3)
        pts = (base[:, :, None, :] + corners[None, None]).reshape(m, K * 8, 3)
        hidden = _ray_box_hidden(cams[w0:w1], pts, bmin, bmax).reshape(m, K, 8).all(axis=2)
        runs = [j for j in range(K) if _has_run(hidden[:, j], 12, 36)]
        if not runs:
            return False
        # clearly visible: most corners of the box shrunk about its centre are unobstructed
        shrunk = (base[:, runs, None, :] + 0.6 * corners[None, None] + 0.4 * corners.mean(axis=0))
        clear = np.zeros((m, K), bool)
        clear[:, runs] = _ray_box_hidden(cams[w0:w1], shrunk.reshape(m, -1, 3), bmin, bmax).reshape(
            m, len(runs), 8).sum(axis=2) <= 2
        found = None
        for j in rng.permutation(runs).tolist():
            zo = zo_all[j]
            if what == "lane":
                ho = o_model.length_m / 2
                if self._in_lane_conflicts_ego(where, zo, ho + 1.0) or \
                        not self.book.free(where, zo[0] - ho - 4, zo[0] + ho + 4):
                    continue
            run = self._usable_run(hidden[:, j], clear[:, j], pts.reshape(m, K, 8, 3)[:, j], w0)
            if run is not None:
                found = (zo, run)
                break
        if found is None:
            return False
        zo, (s, e) = found
        s, e = s + w0, e + w0
        pose_b = np.stack([np.full(n, bln.x_m), zb, np.full(n, heading_b)], 1)
        heading_o = 0.0 if o_v > 0 else (math.pi if o_v < 0 else float(rng.choice([0.0, math.pi / 2, math.pi])))
        if what == "lane":
            oln = lay.lanes[where]
            heading_o = 0.0 if oln.direction > 0 or (oln.kind == "parking" and oln.x_m > 0) else math.pi
        pose_o = np.stack([np.full(n, o_x), zo, np.full(n, heading_o)], 1)
        self.book.take(bl, zb0 - hb - 4, zb0 + hb + 4)
        self.lane_speed[bl] = b_v
        if what == "lane":
            self.book.take(where, zo[0] - o_model.length_m / 2 - 4, zo[0] + o_model.length_m / 2 + 4)
            self.lane_speed[where] = o_v
        del pool[kind], pool[okind]
        b_model, o_model = self._relabel(b_model), self._relabel(o_model)
        self.actors.append(make_actor(b_model, pose_b, np.zeros(n), "occluder"))
        self.actors.append(make_actor(o_model, pose_o, self._walk_phase(o_v), "occludee"))
        self.planned.append(PlannedOcclusion(b_model.tracks[0][0], o_model.tracks[0][0], s, e))
        return True

    def _scenario_speed(self, rng: np.random.Generator, lane: int, kc: int) -> float:
        """A lane's speed; the first scenario to use a lane may pick it, as long as nothing drives there
        yet: near the ego's speed (overtaking or being overtaken slowly), or slow oncoming traffic."""
        ln = self.layout.lanes[lane]
        if ln.kind != "drive" or self.book.busy.get(lane):
            return self.lane_speed[lane]
        if ln.direction > 0:
            v_ego = float(self.ego[max(kc - 1, 0), 1] - self.ego[max(kc - 2, 0), 1]) * self.fps
            return float(np.clip(v_ego * rng.uniform(0.4, 1.7), 2.0, 16.0))
        return -float(rng.uniform(2.0, 10.0))

    def _usable_run(self, hidden: np.ndarray, clear: np.ndarray, pts: np.ndarray, frame0: int
                    ) -> tuple[int, int] | None:
        """The first run of hidden frames 12..36 long, inside the image throughout, entered from and left
        to clearly visible frames (unobstructed, in the image, big enough) within a few frames. The
        arrays cover frames ``frame0``...; the run is returned relative to it."""
        n = len(hidden)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hidden.astype(np.int8), [0]])))
        for s, e in zip(edges[0::2], edges[1::2] - 1):
            if not (12 <= e - s + 1 <= 36):
                continue
            a = s - 1
            while a >= 0 and not clear[a] and s - a <= 6:
                a -= 1
            b = e + 1
            while b < n and not clear[b] and b - e <= 6:
                b += 1
            if a < 1 or b > n - 2 or not (clear[a] and clear[a - 1] and clear[b] and clear[b + 1]):
                continue
            if self._visible_enough(pts, np.array([a - 1, a, b, b + 1]), frame0, need_area=True) and \
                    self._visible_enough(pts, np.arange(a, b + 1), frame0, need_area=False):
                return int(s), int(e)
        return None

    def _visible_enough(self, pts: np.ndarray, frames: np.ndarray, frame0: int, need_area: bool) -> bool:
        """Whether the (N, 8, 3) box corners (of frames frame0...) are in front of the camera and in the
        image in all ``frames`` (relative to frame0); with ``need_area``, centred and big enough."""
        frames = frames[(frames >= 0) & (frames < len(pts))]
        if len(frames) == 0:
            return False
        rots, cams = self._frame_rotations()
        fa = frames + frame0
        p = np.einsum("fij,fpj->fpi", rots[fa], pts[frames] - cams[fa][:, None, :])  # (F, 8, 3)
        if (p[:, :, 2] < 1.0).any():
            return False
        # measured on a 256x512 image of the same field of view, so that the world of a seed does
        # not depend on the rendering resolution
        k = self.intr
        su, sv = 512.0 / k.width, 256.0 / k.height
        u = (k.fx * p[:, :, 0] / p[:, :, 2] + k.cx) * su
        v = (k.fy * p[:, :, 1] / p[:, :, 2] + k.cy) * sv
        if not need_area:
            return bool(((u.max(1) >= 1) & (u.min(1) <= 511) & (v.max(1) >= 1) & (v.min(1) <= 255)).all())
        uc, vc = (u.min(1) + u.max(1)) / 2, (v.min(1) + v.max(1)) / 2
        inside = (uc >= 0.05 * 512) & (uc <= 0.95 * 512) & (vc <= 255)
        area = (u.max(1) - u.min(1)) * (v.max(1) - v.min(1)) * 0.6
        return bool((inside & (area >= 1.1 * self.cfg.min_thing_area_px_at_256x512)).all())

    def _frame_rotations(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 3) world -> optical rotations and (N, 3) camera centres of every frame (cached)."""
        if self._rots is None:
            x, z, yaw, pitch, h = self.ego.T
            cy, sy = np.cos(yaw), np.sin(yaw)
            cp, sp = np.cos(pitch), np.sin(pitch)
            zero, one = np.zeros(self.n), np.ones(self.n)
            ry_t = np.stack([np.stack([cy, zero, -sy], 1), np.stack([zero, one, zero], 1),
                             np.stack([sy, zero, cy], 1)], 1)  # world -> level (R_y(yaw).T)
            rp = np.stack([np.stack([one, zero, zero], 1), np.stack([zero, cp, -sp], 1),
                           np.stack([zero, sp, cp], 1)], 1)  # level -> optical (CameraMounting)
            self._rots = (rp @ ry_t, np.stack([x, -h, z], 1))
        return self._rots

    def _walk_phase(self, speed: float) -> np.ndarray:
        # one stride (two steps) per ~1.4 m walked
        return (2 * math.pi * abs(speed) / 1.4) * self.t

    # ------------------------------------------------------------------ traffic
    def _lead_vehicle(self, rng: np.random.Generator) -> None:
        if rng.random() < 0.35:
            return
        gap = rng.uniform(14.0, 30.0) + rng.uniform(4.0, 12.0) * _smooth_series(rng, self.n, self.fps, (8.0, 20.0), 2)
        kind = "car" if rng.random() < 0.8 else ("truck" if rng.random() < 0.5 else "bus")
        model = self._vehicle_model(rng, kind)
        gap = gap + model.length_m / 2
        lane = self.layout.lanes[self.layout.ego_lane]
        z = self.ego[:, 1] + gap
        x = lane.x_m + 0.1 * _smooth_series(rng, self.n, self.fps, (4.0, 10.0), 2)
        # the lead keeps its lane; a lane change of the ego makes it a neighbour
        self.book.take(self.layout.ego_lane, -1e9, 1e9)  # nothing else drives in the ego's lane
        self.actors.append(make_actor(model, np.stack([x, z, np.zeros(self.n)], 1), np.zeros(self.n), "lead"))

    def _lane_traffic(self, rng: np.random.Generator) -> None:
        dens = self.cfg.traffic_density
        if dens <= 0:
            return
        for i, ln in enumerate(self.layout.lanes):
            if ln.kind == "parking" or i == self.layout.ego_lane:
                continue
            v = self.lane_speed[i]
            lo, hi = self._z_range_for_speed(v)
            z = lo + rng.uniform(0, 20)
            while z < hi:
                if ln.kind == "bike":
                    kind = "cyclist"
                    z += rng.uniform(15, 80) / dens
                else:
                    kind = str(rng.choice(["car", "truck", "bus", "motorcyclist"], p=[0.8, 0.07, 0.06, 0.07]))
                sub = np.random.default_rng(rng.integers(1 << 31))
                L = {"car": 4.8, "truck": 9.0, "bus": 13.0, "motorcyclist": 2.2, "cyclist": 1.8}[kind]
                if self.book.free(i, z - 3, z + L + 3):
                    traj = z + L / 2 + v * self.t
                    if not self._in_lane_conflicts_ego(i, traj, L / 2 + 0.5):
                        model = self._vehicle_model(sub, kind)
                        pose = self._pose_lane(i, z + L / 2, rng=sub)
                        self.book.take(i, z - 2, z + L + 2)
                        ph = self._walk_phase(abs(v) * 0.35) if kind == "cyclist" else np.zeros(self.n)
                        self.actors.append(make_actor(model, pose, ph, "traffic"))
                z += L + 6.0 + rng.exponential(28.0) / dens

    def _parked(self, rng: np.random.Generator) -> None:
        dens = self.cfg.traffic_density
        for i, ln in enumerate(self.layout.lanes):
            if ln.kind != "parking":
                continue
            z = self.z_lo + rng.uniform(0, 6)
            while z < self.z_hi:
                slot = rng.uniform(5.2, 6.5)
                near_cross = any(abs(z - c) < 12 for c in self.crossings)
                if not near_cross and rng.random() < min(0.9, 0.75 * dens) and self.book.free(i, z, z + slot):
                    kind = "car" if rng.random() < 0.9 else ("motorcycle" if rng.random() < 0.6 else "truck")
                    if kind == "truck":
                        slot = 9.5
                        if not self.book.free(i, z, z + slot):
                            z += slot
                            continue
                    sub = np.random.default_rng(rng.integers(1 << 31))
                    model = self._vehicle_model(sub, kind)
                    pose = self._pose_lane(i, z + slot / 2, speed=0.0)
                    pose[:, 0] += rng.uniform(-0.15, 0.15)
                    self.book.take(i, z, z + slot)
                    self.actors.append(make_actor(model, pose, np.zeros(self.n), "parked"))
                z += slot + (rng.exponential(6.0) if rng.random() < 0.25 else 0.0)

    def _sidewalk_people(self, rng: np.random.Generator) -> None:
        dens = self.cfg.pedestrian_density
        if dens <= 0:
            return
        for side in (-1, 1):
            band = self.layout.walk_band(side)
            if band[1] - band[0] < 0.3:
                continue
            count = int(rng.poisson(dens * (self.z_hi - self.z_lo) / 100.0 * rng.uniform(3.0, 8.0)))
            for _ in range(count):
                walking = rng.random() < 0.8
                v = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.7) if walking else 0.0
                lo, hi = self._z_range_for_speed(v, margin_back=30.0)
                z0 = rng.uniform(lo, hi)
                x = rng.uniform(*band)
                sub = np.random.default_rng(rng.integers(1 << 31))
                model = build_person(sub, self.new_id(), walking)
                heading = 0.0 if v > 0 else (math.pi if v < 0 else float(rng.uniform(0, 2 * math.pi)))
                pose = np.stack([np.full(self.n, x), z0 + v * self.t, np.full(self.n, heading)], 1)
                self.actors.append(make_actor(model, pose, self._walk_phase(v), "sidewalk"))
            # parked bicycles near the kerb
            for _ in range(int(rng.poisson(0.6 * (self.z_hi - self.z_lo) / 100.0))):
                xk = (self.layout.road_left_m - 0.9) if side < 0 else (self.layout.road_right_m + 0.9)
                sub = np.random.default_rng(rng.integers(1 << 31))
                model = build_bicycle(sub, self.new_id())
                z0 = rng.uniform(self.z_lo, self.z_hi)
                pose = np.stack([np.full(self.n, xk), np.full(self.n, z0), np.full(self.n, math.pi / 2)], 1)
                self.actors.append(make_actor(model, pose, np.zeros(self.n), "parked"))

    def _crosswalk_positions(self, rng: np.random.Generator) -> list[float]:
        out = []
        z = self.ego[0, 1] + rng.uniform(25.0, 90.0)
        while z < self.z_hi - 20:
            out.append(float(z))
            z += rng.uniform(90.0, 220.0)
        return out

    def _crossing_people(self, rng: np.random.Generator) -> None:
        """Pedestrians crossing the street, timed so that no vehicle (ego included) runs into them."""
        if self.cfg.pedestrian_density <= 0 or self.n < 20:
            return
        lay = self.layout
        count = int(rng.poisson(self.cfg.pedestrian_density * (1.0 + self.n / 80.0)))
        vehicles = [a for a in self.actors if a.model.kind not in ("person",)]
        for _ in range(count):
            if self.crossings and rng.random() < 0.7:
                zc = float(rng.choice(self.crossings)) + rng.uniform(-1.2, 1.2)
            else:
                zc = float(self.ego[int(rng.integers(self.n)), 1] + rng.uniform(15.0, 60.0))
            direction = 1 if rng.random() < 0.5 else -1
            speed = rng.uniform(1.0, 1.6)
            x_start = (lay.road_left_m - 1.0) if direction > 0 else (lay.road_right_m + 1.0)
            x_end = (lay.road_right_m + 1.0) if direction > 0 else (lay.road_left_m - 1.0)
            dur = abs(x_end - x_start) / speed
            for _try in range(12):
                t_start = rng.uniform(-dur * 0.3, self.t[-1] - dur * 0.3)
                s = np.clip((self.t - t_start) / dur, 0.0, 1.0)
                x = x_start + (x_end - x_start) * s
                on_road = (x > lay.road_left_m + 0.1) & (x < lay.road_right_m - 0.1)
                if not self._crossing_clear(x, on_road, zc, vehicles):
                    continue
                sub = np.random.default_rng(rng.integers(1 << 31))
                model = build_person(sub, self.new_id(), True)
                heading = math.pi / 2 if direction > 0 else -math.pi / 2
                pose = np.stack([x, np.full(self.n, zc), np.full(self.n, heading)], 1)
                moving = (s > 0) & (s < 1)
                phase = np.cumsum(moving) * (2 * math.pi * speed / 1.4) / self.fps
                self.actors.append(make_actor(model, pose, phase, "crossing"))
                break

    def _crossing_clear(self, x: np.ndarray, on_road: np.ndarray, zc: float, vehicles: list[Actor]) -> bool:
        # the ego car: keep 8 m in front of its camera when the walker is in its lane
        ex, ez = self.ego[:, 0], self.ego[:, 1]
        near_ego_lane = on_road & (np.abs(x - ex) < 2.6)
        if (near_ego_lane & (zc - ez > -5.0) & (zc - ez < 10.0)).any():
            return False
        for a in vehicles:
            ax, az = a.pose[:, 0], a.pose[:, 1]
            half = a.model.length_m / 2 + 2.5
            if (on_road & (np.abs(x - ax) < a.model.width_m / 2 + 0.8) & (np.abs(az - zc) < half)).any():
                return False
        return True

    # ------------------------------------------------------------------ stuff
    def _statics(self, rng: np.random.Generator) -> list[StaticUnit]:
        units: list[StaticUnit] = []
        pal = self.palette
        lay = self.layout
        for side in (-1, 1):
            self._buildings(rng, side, units)
            kerb_x = lay.road_left_m - lay.kerb_m - 0.45 if side < 0 else lay.road_right_m + lay.kerb_m + 0.45
            lawn = lay.lawn_left_m if side < 0 else lay.lawn_right_m
            # street lamps
            z = self.z_lo + rng.uniform(0, 20)
            spacing = rng.uniform(22.0, 38.0)
            lamps_here = rng.random() < 0.8
            while lamps_here and z < self.z_hi:
                units.append(self._lamp(rng, kerb_x, z, side))
                z += spacing * rng.uniform(0.9, 1.1)
            # trees on the lawn strip (or in pits on the sidewalk)
            if lawn > 0 or rng.random() < 0.5:
                tx_ = (lay.road_left_m - lay.kerb_m - max(lawn, 1.2) / 2) if side < 0 else \
                    (lay.road_right_m + lay.kerb_m + max(lawn, 1.2) / 2)
                z = self.z_lo + rng.uniform(0, 10)
                step = rng.uniform(9.0, 18.0)
                while z < self.z_hi:
                    if rng.random() < 0.8 and all(abs(z - c) > 8 for c in self.crossings):
                        units.append(self._tree(rng, tx_, z))
                    z += step * rng.uniform(0.8, 1.2)
            # traffic signs
            z = self.z_lo + rng.uniform(0, 30)
            while z < self.z_hi:
                units.append(self._sign(rng, kerb_x + side * 0.15, z, side))
                z += rng.uniform(20.0, 60.0)
            # railings at the kerb near crosswalks (fence)
            for c in self.crossings:
                if rng.random() < 0.6:
                    x = (lay.road_left_m - lay.kerb_m - 0.25) if side < 0 else (lay.road_right_m + lay.kerb_m + 0.25)
                    units.append(self._fence(rng, x, c + 3.0, c + 3.0 + rng.uniform(6, 14), 1.0, pal.fence, side))
                    units.append(self._fence(rng, x, c - 3.0 - rng.uniform(6, 14), c - 3.0, 1.0, pal.fence, side))
        for c in self.crossings:
            units.extend(self._traffic_lights(rng, c))
        units.sort(key=lambda u: u.footprint[2])
        return units

    def _buildings(self, rng: np.random.Generator, side: int, units: list[StaticUnit]) -> None:
        lay = self.layout
        pal = self.palette
        prop = lay.property_left_m if side < 0 else lay.property_right_m
        z = self.z_lo - rng.uniform(0, 20)
        while z < self.z_hi + 60:
            length = rng.uniform(8.0, 32.0)
            if rng.random() < 0.22:  # gap: a lawn with trees or a back building
                gap = rng.uniform(3.0, 12.0)
                if rng.random() < 0.5:
                    units.append(self._building(rng, side, prop + side * rng.uniform(12, 25), z + 1.0, z + gap - 1.0,
                                                rng.uniform(8, 22)))
                for zz in np.arange(z + 2.0, z + gap - 1.0, 4.0):
                    units.append(self._tree(rng, prop + side * rng.uniform(2.0, 5.0), zz))
                self._property_line(rng, side, prop, z, z + gap, units, force=True)
                z += gap
                continue
            setback = 0.0 if rng.random() < 0.5 else rng.uniform(1.5, 5.0)
            units.append(self._building(rng, side, prop + side * setback, z, z + length,
                                        rng.uniform(5.5, 24.0) if rng.random() < 0.8 else rng.uniform(24, 40)))
            if setback > 0:
                cls = TERRAIN if rng.random() < 0.6 else SIDEWALK
                col = pal.terrain if cls == TERRAIN else pal.yard_paving
                x0, x1 = sorted((prop, prop + side * setback))
                self.yards.append(GroundRect(x0, x1, z, z + length, cls, col, True))
                self._property_line(rng, side, prop, z, z + length, units)
            z += length

    def _property_line(self, rng, side, prop, z0, z1, units, force: bool = False) -> None:
        pal = self.palette
        r = rng.random()
        x = prop + side * 0.3
        if r < 0.3:  # hedge
            h = rng.uniform(0.8, 1.9)
            b = MeshBuilder()
            col = np.asarray(pal.vegetation) * rng.uniform(0.85, 1.15)
            x0, x1 = sorted((x - side * 0.1, x + side * rng.uniform(0.6, 1.0)))
            f = b.box(x0, x1, 0.0, h, z0, z1, col, VEGETATION, 0, face_colors={"top": col * 1.15})
            face = f["-x"] if side > 0 else f["+x"]
            xf = x0 if side > 0 else x1
            blobs = []
            for zz in np.arange(z0 + 0.3, z1 - 0.3, 0.9):
                hh = rng.uniform(0.2, h - 0.2)
                blobs.append([zz, zz + rng.uniform(0.3, 0.7), hh, min(h, hh + rng.uniform(0.2, 0.5))])
            if blobs:
                b.detail(face, rects_x(xf + side * -0.001, blobs), col * 0.72)
            units.append(StaticUnit(b.build(), (x0, x1, z0, z1)))
        elif r < 0.55:
            units.append(self._fence(rng, x, z0, z1, rng.uniform(1.0, 2.0), pal.fence, side))
        elif r < 0.8 or force:
            h = rng.uniform(0.6, 2.4)
            b = MeshBuilder()
            col = np.asarray(pal.wall) * rng.uniform(0.88, 1.1)
            x0, x1 = sorted((x, x + side * rng.uniform(0.25, 0.4)))
            f = b.box(x0, x1, 0.0, h, z0 + 0.05, z1 - 0.05, col, WALL, 0, face_colors={"top": col * 0.8})
            face = f["-x"] if side > 0 else f["+x"]
            xf = x0 if side > 0 else x1
            joints = [[zz, zz + 0.05, 0.0, h] for zz in np.arange(z0 + 2.0, z1 - 0.5, 2.0)]
            joints += [[z0, z1, h - 0.12, h]]
            b.detail(face, rects_x(xf, joints), col * 0.75)
            units.append(StaticUnit(b.build(), (x0, x1, z0, z1)))

    def _fence(self, rng, x, z0, z1, h, color, side) -> StaticUnit:
        b = MeshBuilder()
        col = np.asarray(color) * rng.uniform(0.9, 1.1)
        x0, x1 = x - 0.03, x + 0.03
        f = b.box(x0, x1, 0.05, h, z0, z1, col * 0.85, FENCE, 0)
        pickets = [[zz, zz + 0.05, 0.05, h] for zz in np.arange(z0 + 0.05, z1 - 0.05, 0.16)]
        rails = [[z0, z1, h * 0.2, h * 0.2 + 0.06], [z0, z1, h - 0.1, h]]
        for face, xf in ((f["-x"], x0), (f["+x"], x1)):
            b.detail(face, rects_x(xf, pickets), col * 0.55)
            b.detail(face, rects_x(xf, rails), col * 1.2)
        return StaticUnit(b.build(), (x0, x1, z0, z1))

    def _building(self, rng, side, x_facade, z0, z1, height) -> StaticUnit:
        b = MeshBuilder()
        col = tx.building_color(rng)
        depth = rng.uniform(10.0, 20.0)
        x0, x1 = sorted((x_facade, x_facade + side * depth))
        f = b.box(x0, x1, 0.0, height, z0, z1, col, BUILDING, 0, face_colors={"top": col * 0.8})
        face = f["-x"] if side > 0 else f["+x"]
        xf = x0 if side > 0 else x1
        floor_h = rng.uniform(2.8, 3.4)
        win_w = rng.uniform(0.9, 1.6)
        pitch = win_w + rng.uniform(0.8, 2.0)
        win_h = rng.uniform(1.2, 1.7)
        glass = np.asarray(self.palette.window) * rng.uniform(0.8, 1.25)
        frame = col * rng.uniform(0.75, 0.9) if rng.random() < 0.5 else np.array([225.0, 225.0, 220.0])
        n_cols = max(1, int((z1 - z0 - 1.0) / pitch))
        zs = z0 + (z1 - z0 - n_cols * pitch) / 2 + np.arange(n_cols) * pitch + (pitch - win_w) / 2
        shop = rng.random() < 0.5
        first = 1 if shop else 0
        rects, frames = [], []
        for fl in range(first, max(first, int((height - 0.8) / floor_h))):
            h0 = fl * floor_h + 0.9
            if h0 + win_h > height - 0.4:
                break
            for zz in zs:
                frames.append([zz - 0.08, zz + win_w + 0.08, h0 - 0.08, h0 + win_h + 0.08])
                rects.append([zz, zz + win_w, h0, h0 + win_h])
        if frames:
            b.detail(face, rects_x(xf, frames), frame)
            b.detail(face, rects_x(xf, rects), glass)
        if shop:
            shop_glass = glass * rng.uniform(0.7, 1.1)
            n_shop = max(1, int((z1 - z0) / rng.uniform(3.5, 6.0)))
            edges = np.linspace(z0 + 0.4, z1 - 0.4, n_shop + 1)
            b.detail(face, rects_x(xf, [[edges[i] + 0.25, edges[i + 1] - 0.25, 0.3, floor_h * 0.85]
                                        for i in range(n_shop)]), shop_glass)
            b.detail(face, rects_x(xf, [[z0, z1, floor_h * 0.9, floor_h * 1.0]]), tx.sign_front_color(rng) * 0.8)
        else:
            dz = rng.uniform(z0 + 0.5, max(z0 + 0.6, z1 - 1.8))
            b.detail(face, rects_x(xf, [[dz, dz + 1.2, 0.0, 2.2]]), col * 0.45)
        b.detail(face, rects_x(xf, [[z0, z1, height - 0.35, height]]), col * 0.82)  # cornice
        # side walls show at gaps: a few windows there too
        for fz, zz in ((f["-z"], z0), (f["+z"], z1)):
            if rng.random() < 0.5 and height > 6:
                xs = np.arange(min(x0, x1) + 1.5, max(x0, x1) - 1.5, pitch * 1.3)
                sw = [[x_ + 0.0, x_ + win_w, fl * floor_h + 0.9, fl * floor_h + 0.9 + win_h]
                      for fl in range(first, int((height - 0.8) / floor_h)) for x_ in xs
                      if fl * floor_h + 0.9 + win_h < height - 0.4]
                if sw:
                    b.detail(fz, rects_z(zz, sw), glass * 0.9)
        return StaticUnit(b.build(), (x0, x1, z0, z1))

    def _lamp(self, rng, x, z, side) -> StaticUnit:
        b = MeshBuilder()
        col = np.asarray(self.palette.pole) * rng.uniform(0.9, 1.1)
        h = rng.uniform(6.0, 9.0)
        r = rng.uniform(0.11, 0.14)
        b.column(x, z, r, 0.0, h, col, POLE, 0)
        arm = rng.uniform(1.2, 2.6)
        xa0, xa1 = sorted((x, x - side * arm))
        b.box(xa0, xa1, h - 0.16, h, z - 0.06, z + 0.06, col, POLE, 0)
        xl = x - side * arm
        b.box(xl - 0.35, xl + 0.35, h - 0.32, h - 0.1, z - 0.17, z + 0.17, col * 0.8, POLE, 0)
        return StaticUnit(b.build(), (min(xa0, x - r), max(xa1, x + r), z - 0.17, z + 0.17))

    def _tree(self, rng, x, z) -> StaticUnit:
        b = MeshBuilder()
        trunk_h = rng.uniform(2.2, 3.4)
        r = rng.uniform(0.13, 0.22)
        bark = np.array([95, 80, 60]) * rng.uniform(0.7, 1.2)
        b.column(x, z, r, 0.0, trunk_h + 1.0, bark, VEGETATION, 0)
        green = np.asarray(self.palette.vegetation) * rng.uniform(0.85, 1.2)
        crown = rng.uniform(1.6, 3.0)
        ch = trunk_h + crown * rng.uniform(0.7, 1.0)
        for i in range(int(rng.integers(4, 7))):
            off = rng.normal(0, crown * 0.35, 3) * np.array([1.0, 0.7, 1.0])
            shade = green * rng.uniform(0.75, 1.25) * np.array([rng.uniform(0.95, 1.05), 1.0, rng.uniform(0.9, 1.1)])
            b.billboard((x + off[0], -(ch + off[1]), z + off[2]), crown * rng.uniform(0.5, 0.8), blob_shape(rng),
                        np.clip(shade, 0, 255))
        return StaticUnit(b.build(), (x - r, x + r, z - r, z + r))

    def _sign(self, rng, x, z, side) -> StaticUnit:
        b = MeshBuilder()
        pole_col = np.asarray(self.palette.pole) * rng.uniform(0.9, 1.15)
        r = rng.uniform(0.07, 0.09)
        top = rng.uniform(2.4, 3.2)
        b.column(x, z, r, 0.0, top, pole_col, POLE, 0)
        shape = rng.integers(0, 4)
        s = rng.uniform(0.6, 0.9)
        front = tx.sign_front_color(rng)
        back = np.array([150, 152, 155]) * rng.uniform(0.8, 1.1)
        hc = top - s / 2 - 0.05
        if shape == 0:  # round
            a = np.arange(8) * math.pi / 4 + math.pi / 8
            prof = np.stack([x + s / 2 * np.cos(a), hc + s / 2 * np.sin(a)], 1)
        elif shape == 1:  # triangle (warning)
            prof = np.array([[x - s / 2, hc - s * 0.4], [x + s / 2, hc - s * 0.4], [x, hc + s * 0.5]])
        elif shape == 2:  # rectangle (information)
            w = s * rng.uniform(1.0, 1.6)
            prof = np.array([[x - w / 2, hc - s / 2], [x + w / 2, hc - s / 2], [x + w / 2, hc + s / 2],
                             [x - w / 2, hc + s / 2]])
        else:  # diamond (priority)
            prof = np.array([[x, hc - s / 2], [x + s / 2, hc], [x, hc + s / 2], [x - s / 2, hc]])
        z0, z1 = z - r - 0.04, z - r
        ids = b.prism_z(prof, z0, z1, back, SIGN, 0, face_colors={0: front})
        c = prof.mean(axis=0)
        inner = c + (prof - c) * 0.72
        inner3 = np.stack([inner[:, 0], -inner[:, 1], np.full(len(inner), z0)], 1)
        inner_col = np.array([240, 240, 240.0]) if front.mean() < 150 else np.array([200, 30, 30.0])
        b.detail(ids[0], inner3[None], inner_col)
        xs = prof[:, 0]
        return StaticUnit(b.build(), (min(xs.min(), x - r), max(xs.max(), x + r), z0, z + r))

    def _traffic_lights(self, rng, zc) -> list[StaticUnit]:
        out = []
        lay = self.layout
        pole_col = np.asarray(self.palette.pole) * rng.uniform(0.8, 1.0)
        housing = np.array([35, 35, 32]) if rng.random() < 0.6 else np.array([160, 140, 40])
        lit = int(rng.integers(3))
        for side in (-1, 1):
            x = (lay.road_left_m - lay.kerb_m - 0.5) if side < 0 else (lay.road_right_m + lay.kerb_m + 0.5)
            z = zc - 2.5 if side > 0 else zc + 2.5
            b = MeshBuilder()
            r = 0.1
            h = rng.uniform(3.2, 3.8)
            b.column(x, z, r, 0.0, h + 0.1, pole_col, POLE, 0)
            zf = z - r - 0.01 if side > 0 else z + r + 0.01
            self._light_box(b, x, zf, h - 0.95, housing, lit, facing=-1 if side > 0 else 1)
            xs = [x - 0.2, x + 0.2]
            fp = (min(xs), max(xs), z - 0.45, z + 0.45)
            if side > 0 and rng.random() < 0.7:  # mast arm over the road with hanging lights
                arm_end = max(lay.road_left_m + 2.0, lay.road_right_m - rng.uniform(5.0, 9.0))
                ha = h + rng.uniform(1.6, 2.4)
                b.column(x, z, r * 1.3, h, ha + 0.2, pole_col, POLE, 0)
                b.box(arm_end, x, ha, ha + 0.18, z - 0.08, z + 0.08, pole_col, POLE, 0)
                for xx in np.linspace(arm_end + 0.5, x - 1.5, 2):
                    self._light_box(b, xx, z - 0.1, ha - 1.0, housing, lit, facing=-1)
                fp = (arm_end, x + r * 1.3, z - 0.45, z + 0.45)
            out.append(StaticUnit(b.build(), fp))
        return out

    def _light_box(self, b: MeshBuilder, x, z_face, h0, housing, lit, facing: int) -> None:
        w, hgt, d = 0.34, 0.95, 0.3
        z0, z1 = (z_face - d, z_face) if facing < 0 else (z_face, z_face + d)
        f = b.box(x - w / 2, x + w / 2, h0, h0 + hgt, z0, z1, housing, LIGHT, 0)
        face = f["-z"] if facing < 0 else f["+z"]
        zf = z0 if facing < 0 else z1
        cols = [(230, 40, 30), (240, 170, 20), (40, 220, 90)]
        for i in range(3):
            hc = h0 + hgt - 0.17 - i * 0.3
            a = np.arange(8) * math.pi / 4
            ring = np.stack([x + 0.11 * np.cos(a), -(hc + 0.11 * np.sin(a)), np.full(8, zf)], 1)
            col = np.asarray(cols[i], float) * (1.0 if i == lit else 0.3)
            b.detail(face, ring[None], col)

    # ------------------------------------------------------------------ ground
    def _ground(self, rng: np.random.Generator) -> tuple[list[GroundRect], list[GroundRect]]:
        lay = self.layout
        pal = self.palette
        z0, z1 = self.z_lo - 50, self.z_hi + 2000
        strips = [GroundRect(-400.0, 400.0, z0, z1, TERRAIN, pal.terrain, True),
                  GroundRect(lay.road_left_m, lay.road_right_m, z0, z1, ROAD, pal.road, True)]
        for side in (-1, 1):
            kerb_in = lay.road_left_m if side < 0 else lay.road_right_m
            kerb_out = kerb_in + side * lay.kerb_m
            lawn = lay.lawn_left_m if side < 0 else lay.lawn_right_m
            prop = lay.property_left_m if side < 0 else lay.property_right_m
            a, b = sorted((kerb_out, prop))
            strips.append(GroundRect(a, b, z0, z1, SIDEWALK, pal.sidewalk, True))
            if lawn > 0:
                a, b = sorted((kerb_out, kerb_out + side * lawn))
                strips.append(GroundRect(a, b, z0, z1, TERRAIN, pal.terrain, True))
            a, b = sorted((kerb_in, kerb_out))
            strips.append(GroundRect(a, b, z0, z1, SIDEWALK, pal.kerb, True))
        # markings (image only; they are road)
        details: list[GroundRect] = list(self.yards)
        mk = pal.marking
        drive = [ln for ln in lay.lanes if ln.kind == "drive"]
        w = 0.13
        for a_ln, b_ln in zip(lay.lanes[:-1], lay.lanes[1:]):
            xb = (a_ln.x_m + a_ln.width_m / 2 + b_ln.x_m - b_ln.width_m / 2) / 2
            if a_ln.kind == "drive" and b_ln.kind == "drive" and a_ln.direction != b_ln.direction:
                strips.append(GroundRect(xb - 0.2, xb - 0.2 + w, z0, z1, ROAD, mk, False))
                strips.append(GroundRect(xb + 0.2 - w, xb + 0.2, z0, z1, ROAD, mk, False))
            elif a_ln.kind == "drive" and b_ln.kind == "drive":
                period, dash = rng.uniform(9.0, 12.0), rng.uniform(3.0, 4.5)
                for zz in np.arange(z0, self.z_hi + 200, period):
                    details.append(GroundRect(xb - w / 2, xb + w / 2, zz, zz + dash, ROAD, mk, False))
            else:
                strips.append(GroundRect(xb - w / 2, xb + w / 2, z0, z1, ROAD, mk, False))
        if drive:
            for xe in (lay.road_left_m + 0.3, lay.road_right_m - 0.3):
                if not any(ln.kind != "drive" and abs(ln.x_m - xe) < ln.width_m for ln in lay.lanes):
                    strips.append(GroundRect(xe - w / 2, xe + w / 2, z0, z1, ROAD, mk, False))
        for c in self.crossings:
            for xx in np.arange(lay.road_left_m + 0.3, lay.road_right_m - 0.5, 1.0):
                details.append(GroundRect(xx, xx + 0.5, c - 2.0, c + 2.0, ROAD, mk, False))
            details.append(GroundRect(0.0, lay.road_right_m, c - 3.2, c - 2.8, ROAD, mk, False))
        # asphalt patches and manholes
        for _ in range(int((self.z_hi - self.z_lo) / 12)):
            x = rng.uniform(lay.road_left_m, lay.road_right_m)
            zz = rng.uniform(self.z_lo, self.z_hi)
            wx, wz = rng.uniform(0.4, 3.0), rng.uniform(0.4, 6.0)
            col = tuple(float(v) for v in np.asarray(pal.road_patch) * rng.uniform(0.9, 1.15))
            details.append(GroundRect(x, min(lay.road_right_m, x + wx), zz, zz + wz, ROAD, col, False))
        # paving joints across the walkways, near the camera only
        joint = pal.sidewalk_joint
        for side in (-1, 1):
            wx0, wx1 = lay.walk_band(side)
            wx0, wx1 = wx0 - 0.35, wx1 + 0.35
            step = rng.uniform(1.0, 2.0)
            for zz in np.arange(self.z_lo, self.z_hi, step):
                details.append(GroundRect(wx0, wx1, zz, zz + 0.05, SIDEWALK, joint, False, reach_m=30.0))
        return strips, details


def build_world(seed: int, num_frames: int, config: SynthConfig) -> World:
    """Simulate the whole sequence: cheap (no pixels), deterministic in (seed, num_frames, config)."""
    return WorldBuilder(seed, num_frames, config).build()
