"""Rasterising the simulated world into images and exact panoptic labels.

Every polygon is filled once into the image (colour) and once into a label map holding
``class_id << 24 | track_id`` (track 0 for stuff) with the same integer coordinates, so
labels are exact and agree with the picture; the image alone gets details (windows,
lights), grain, blur and noise afterwards. Visibility comes from the same fills: each
thing is also rasterised alone into a small buffer, which gives its unoccluded pixel
count and its amodal box.

Draw order (painter's algorithm): sky, the ground (coplanar regions, markings), then
every object (buildings, props, things) in an order from far to near that is exact for
objects standing on the ground with disjoint footprints: of two footprints separated
along x or z, the one on the camera's side of the separating line is in front.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from panoptic_ros.camera import CameraModel, CameraMounting
from panoptic_ros.classes import VOID
from panoptic_ros.datasets.types import ObjectAnnotation, PanopticFrame
from panoptic_ros.synth import textures as tx
from panoptic_ros.synth.textures import rng_for
from panoptic_ros.synth.world import (FACE_PAD, NEAR_M, SKY, Actor, Mesh, SynthConfig, World, build_world,
                                      contact_indices)

_SHIFT = 4  # sub-pixel bits of cv2 polygon coordinates
_ONE = 1 << _SHIFT
_LINE = cv2.LINE_8
_CLASS_SHIFT = 24  # label map value: class_id << 24 | track_id
_TRACK_MASK = (1 << _CLASS_SHIFT) - 1
_GROUND_BANDS_M = np.array([-30.0, 5.0, 9.0, 15.0, 24.0, 38.0, 60.0, 95.0, 150.0, 240.0, 400.0, 800.0, 3000.0])


@dataclass(frozen=True)
class OcclusionEvent:
    """A thing that was visible, became fully hidden while inside the image, and re-emerged.

    ``start_frame``..``end_frame`` (inclusive) run from the first to the last frame in which
    the object has no visible pixel; frames in between show at most slivers (visible
    fraction below the threshold of :meth:`SyntheticSequence.occlusion_events`). The
    object is clearly visible in ``start_frame - 1`` (or the frames just before) and again
    right after the episode. ``occluder_track_id`` is the thing that covered it in most
    fully hidden frames (0 when stuff did).
    """

    track_id: int
    occluder_track_id: int
    start_frame: int
    end_frame: int
    length: int  # end_frame - start_frame + 1


@dataclass
class _Unit:
    """One object prepared for drawing in one frame; its data sits in the frame's arrays at the offsets."""

    mesh: Mesh
    v0: int  # first vertex in _FrameGeometry.cam
    f0: int  # first face
    d0: int  # first detail group
    bb: np.ndarray | None  # (B, 3) billboard centres, optical frame
    footprint: tuple[float, float, float, float]
    actor: int  # index into world.actors, -1 for stuff
    local: np.ndarray | None  # animated local vertices (actors)
    depth: float = 0.0
    screen: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # u0 v0 u1 v1
    small: bool = False
    crosses_near: bool = False
    bb_colors: list | None = None
    fa: int = 0  # its front faces are _FrameGeometry entries fa..fb-1
    fb: int = 0


@dataclass
class _FrameGeometry:
    """The front faces of all units of one frame, transformed, culled and shaded in a few array
    operations; per-face entries are Python lists for a fast drawing loop."""

    cam: np.ndarray  # (V, 3) vertices, optical frame
    uv16: np.ndarray  # (V, 2) int32 pixel coordinates << _SHIFT
    face: list  # frame index of each front face
    pad: np.ndarray  # (F_front, K) vertex indices of each front face (for near-plane clipping)
    pts: list  # int32 (k, 2) polygon of each front face, None where it must be clipped first
    labels: list  # class_id << 24 | track_id
    tracks: list
    colors: list | None
    detail_colors: list | None


@dataclass
class _Pack:
    """The static meshes of a sequence concatenated into flat arrays, sorted by footprint z."""

    meshes: list[Mesh]
    footprints: list[tuple[float, float, float, float]]
    z0: np.ndarray
    z1: np.ndarray
    cx: np.ndarray  # (U,) centre of each unit's bounding circle on the ground
    cz: np.ndarray
    radius: np.ndarray
    reach: np.ndarray  # (U,) drawn up to this multiple of view_distance_m ahead (small props less far)
    max_len: float
    verts: np.ndarray
    normals: np.ndarray
    centers: np.ndarray
    colors: np.ndarray
    face_pad: np.ndarray  # pack vertex indices
    labels: np.ndarray
    face_len: np.ndarray
    det_parent: np.ndarray  # pack face indices
    det_color: np.ndarray
    v_start: np.ndarray  # (U + 1,)
    f_start: np.ndarray
    d_start: np.ndarray

    @classmethod
    def of(cls, world: World) -> "_Pack":
        meshes = [s.mesh for s in world.statics]
        fps = [s.footprint for s in world.statics]
        nv = np.array([0] + [len(m.verts) for m in meshes]).cumsum()
        nf = np.array([0] + [len(m.faces) for m in meshes]).cumsum()
        nd = np.array([0] + [len(m.details) for m in meshes]).cumsum()
        z0 = np.array([f[2] for f in fps])
        z1 = np.array([f[3] for f in fps])
        def cat(xs: list[np.ndarray], *shape: int) -> np.ndarray:  # concatenate, also no arrays at all
            return np.concatenate(xs) if xs else np.zeros((0, *shape))
        big = np.array([m.aabb[3] - m.aabb[2] > 10.0 or m.aabb[5] - m.aabb[4] > 10.0 for m in meshes], bool)
        ab = np.array([m.aabb for m in meshes]).reshape(-1, 6)
        return cls(
            meshes, fps, z0, z1, (ab[:, 0] + ab[:, 1]) / 2, (ab[:, 4] + ab[:, 5]) / 2,
            np.hypot(ab[:, 1] - ab[:, 0], ab[:, 5] - ab[:, 4]) / 2 + 0.1,
            np.where(big, 1.4, 0.55), float((z1 - z0).max()) if len(fps) else 0.0,
            cat([m.verts for m in meshes], 3), cat([m.normals for m in meshes], 3),
            cat([m.centers for m in meshes], 3), cat([m.colors for m in meshes], 3),
            cat([m.face_pad + nv[i] for i, m in enumerate(meshes)], FACE_PAD).astype(np.int64),
            cat([(m.classes << _CLASS_SHIFT) | m.tracks for m in meshes]).astype(np.int64),
            cat([_face_lengths(m) for m in meshes]).astype(np.int64),
            np.array([d.parent + nf[i] for i, m in enumerate(meshes) for d in m.details], dtype=np.int64),
            np.array([d.color for m in meshes for d in m.details]).reshape(-1, 3),
            nv, nf, nd)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a (k, 3) polygon against z >= NEAR_M."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        ina, inb = a[2] >= NEAR_M, b[2] >= NEAR_M
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR_M - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _rot_y(heading: float) -> np.ndarray:
    c, s = math.cos(heading), math.sin(heading)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


class _Assets:
    """Per-sequence pixel assets, made once on first use (deterministic in the seed)."""

    def __init__(self, world: World) -> None:
        cfg = world.config
        h, w = cfg.height, cfg.width
        rng = rng_for(world.seed, "assets")
        self.sky = tx.make_sky(world.look, rng, 2 * h, w)
        self.sky_horizon_row = 2 * h  # the last row of the sky image lies at the horizon
        pad = 32
        g = tx.make_grain(rng, h + pad, w + pad)
        self.grain_pos = np.clip(g, 0, 255).astype(np.uint8)
        self.grain_neg = np.clip(-g, 0, 255).astype(np.uint8)
        self.grain_lut = tx.grain_lut(world.look.grain)
        self.noise_pos, self.noise_neg = tx.make_sensor_noise(rng, h + pad, w + pad, world.look.noise_sigma)
        self.rain = tx.make_rain(rng, h + pad, w + pad, world.look.rain) if world.look.rain > 0 else None
        self.pad = pad


class SyntheticSequence:
    """One procedurally generated driving sequence; any frame renders on its own, deterministically.

    The world (layout, traffic, pedestrians, ego motion, scripted occlusions) is simulated
    at construction; :meth:`render` rasterises frame ``k``. Same seed and config give
    byte-identical frames whatever the order of the calls.
    """

    def __init__(self, seed: int, num_frames: int, config: SynthConfig | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        config = config if config is not None else SynthConfig()
        if not isinstance(config, SynthConfig):
            raise TypeError(f"config must be a SynthConfig, got {type(config).__name__}")
        self._setup(build_world(int(seed), int(num_frames), config))

    @classmethod
    def from_world(cls, world: World) -> "SyntheticSequence":
        """Render a given (e.g. edited) world instead of simulating one from a seed."""
        if not isinstance(world, World):
            raise TypeError(f"from_world takes a World, got {type(world).__name__}")
        seq = cls.__new__(cls)
        seq._setup(world)
        return seq

    def _setup(self, world: World) -> None:
        self.world = world
        self.seed = world.seed
        self.num_frames = world.num_frames
        self.config = world.config
        self.name = f"synth_{self.seed:06d}"
        self.camera = CameraModel(self.world.intrinsics,
                                  CameraMounting(self.world.camera_height_m, self.world.pitch_rad))
        self._pack = _Pack.of(self.world)
        self._ground_detail_arrays = np.array([(d.z0, d.z1, d.reach_m, float(d.label))
                                               for d in self.world.ground_details]).reshape(-1, 4)
        actors = self.world.actors
        self._poses = np.stack([a.pose for a in actors]) if actors else np.zeros((0, self.num_frames, 3))
        self._radii = np.array([a.radius_m for a in actors])
        self._heights = np.array([a.model.mesh.aabb[3] - a.model.mesh.aabb[2] for a in actors])
        intr = self.world.intrinsics
        self._tan_half_fov = (intr.width / 2 + 4) / intr.fx
        self._assets: _Assets | None = None
        self._objects: dict[int, list[ObjectAnnotation]] = {}

    def __len__(self) -> int:
        return self.num_frames

    # ------------------------------------------------------------------ public
    def render(self, k: int) -> PanopticFrame:
        """Frame ``k``: image, exact labels and per-object ground truth."""
        k = self._check_index(k)
        img, sem, inst, objects, cam = self._rasterise(k, draw_image=True)
        self._objects[k] = objects
        return PanopticFrame(image=img, semantic=sem, instance=inst, objects=list(objects), camera=cam,
                             stamp_ns=int(round(k * 1e9 / self.config.fps)), frame_index=k, sequence=self.name)

    def objects(self, k: int) -> list[ObjectAnnotation]:
        """Frame ``k``'s object annotations only (labels are rasterised, the image is not)."""
        k = self._check_index(k)
        if k not in self._objects:
            self._objects[k] = self._rasterise(k, draw_image=False)[3]
        return list(self._objects[k])

    def occlusion_events(self, visible_fraction: float = 0.1) -> list[OcclusionEvent]:
        """Full occlusions with re-emergence, from the rendered visibility of every frame.

        An episode is a run of frames in which the object is inside the image but shows less
        than ``visible_fraction`` of itself, with at least one frame of no visible pixel, and
        with clear visibility (>= ``visible_fraction``) right before and right after it.
        Slivers that peek out for a frame do not split one occlusion into many.
        """
        if not 0.0 < visible_fraction <= 1.0:
            raise ValueError(f"visible_fraction must lie in (0, 1], got {visible_fraction!r}")
        return _find_events([self.objects(k) for k in range(self.num_frames)], visible_fraction)

    # ------------------------------------------------------------------ internals
    def _check_index(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.num_frames:
            raise IndexError(f"frame index {k!r} is outside 0..{self.num_frames - 1} of sequence {self.name}")
        return int(k)

    def _rasterise(self, k: int, draw_image: bool):
        world = self.world
        cfg = self.config
        H, W = cfg.height, cfg.width
        cam, rot, c = world.camera_at(k)
        look = world.look
        exposure = look.exposure_at(k / cfg.fps)
        lab = np.full((H, W), SKY << _CLASS_SHIFT, np.int32)
        img = None
        if draw_image:
            if self._assets is None:
                self._assets = _Assets(world)
            img = self._sky(cam, exposure)
        shade = _Shade(look, exposure)
        units, geo = self._prepare_units(k, cam, rot, c, shade, draw_image)
        self._draw_ground(cam, rot, c, img, lab, shade)
        if draw_image:
            self._draw_shadows(cam, rot, c, img, units)
        polys: dict[int, list[np.ndarray]] = {}
        k4 = _k4(cam)
        order, covered = _paint_order(units, c)
        for i in order:
            _draw_unit(units[i], geo, img, lab, polys, draw_image, k4)
        sem = (lab >> _CLASS_SHIFT).astype(np.uint8)
        inst = lab & _TRACK_MASK
        uncovered: set[int] = set()  # things nothing is drawn over, alone in their unit
        for i in np.flatnonzero(~covered).tolist():
            if units[i].actor >= 0 and len(world.actors[units[i].actor].model.tracks) == 1:
                uncovered.add(world.actors[units[i].actor].model.tracks[0][0])
        objects = self._annotate(k, cam, rot, c, units, polys, sem, inst, uncovered)
        if draw_image:
            img = self._post(k, img, sem)
        return img, sem, inst, objects, cam

    def _sky(self, cam: CameraModel, exposure: float) -> np.ndarray:
        a = self._assets
        H = self.config.height
        start = int(round(a.sky_horizon_row - cam.horizon_v()))
        start = min(max(start, 0), a.sky.shape[0] - H)
        img = a.sky[start:start + H].copy()
        if abs(exposure - 1.0) > 1e-3:
            img = cv2.convertScaleAbs(img, alpha=exposure)
        return img

    @staticmethod
    def _project16(cam: CameraModel, pts_cam: np.ndarray) -> np.ndarray:
        """Optical-frame points -> cv2 fixed-point pixels (points nearer than NEAR_M are pushed to it;
        faces using them are clipped before drawing)."""
        p = pts_cam.copy()
        p[:, 2] = np.maximum(p[:, 2], NEAR_M)
        return np.round(cam.project(p) * _ONE).astype(np.int32)

    # ------------------------------------------------------------------ ground
    def _draw_ground(self, cam, rot, c, img, lab, shade: "_Shade") -> None:
        world = self.world
        cz = c[2]
        bands = cz + _GROUND_BANDS_M
        quads, meta = [], []
        for gi, g in enumerate(world.ground):
            if g.label:
                quads.append(_ground_quad(g.x0, g.x1, max(g.z0, cz - 30.0), g.z1))
                meta.append((gi, -1))
            if img is not None:
                # thin markings get every other band: their haze steps are invisible anyway
                step = 1 if g.label else 2
                for bi in range(0, len(bands) - 1, step):
                    za, zb = max(g.z0, bands[bi]), min(g.z1, bands[min(bi + step, len(bands) - 1)])
                    if zb > za:
                        quads.append(_ground_quad(g.x0, g.x1, za, zb))
                        meta.append((gi, bi))
        gd = self._ground_detail_arrays
        sel = (gd[:, 1] > cz - 5.0) & (gd[:, 0] < cz + np.minimum(gd[:, 2], self.config.view_distance_m))
        if img is None:
            sel &= gd[:, 3] > 0
        details = [world.ground_details[i] for i in np.flatnonzero(sel).tolist()]
        for di, d in enumerate(details):
            quads.append(_ground_quad(d.x0, d.x1, d.z0, d.z1))
            meta.append((-1, di))
        if not quads:
            return
        qc = ((np.stack(quads).reshape(-1, 3) - c) @ rot.T).reshape(-1, 4, 3)
        uv16 = self._project16(cam, qc.reshape(-1, 3)).reshape(-1, 4, 2)
        zmin = qc[:, :, 2].min(axis=1)
        zmax = qc[:, :, 2].max(axis=1)
        if img is not None:
            band_mid = np.maximum(1.0, (_GROUND_BANDS_M[:-1] + _GROUND_BANDS_M[1:]) / 2)
            strip_cols = shade.ground_many(np.array([g.color for g in world.ground]), band_mid).tolist()
            det_cols = shade.ground_many(np.array([d.color for d in details]).reshape(-1, 3),
                                         np.maximum(1.0, np.linalg.norm(qc.mean(axis=1), axis=1)), diagonal_from=len(quads) - len(details)
                                         ).tolist() if details else []
        clip_first = (zmin < NEAR_M).tolist()
        visible = (zmax >= NEAR_M).tolist()
        for j, (gi, bi) in enumerate(meta):
            if not visible[j]:
                continue
            if clip_first[j]:
                poly = _clip_near(qc[j])
                if len(poly) < 3:
                    continue
                pts = _project_clipped(poly, _k4(cam))
            else:
                pts = uv16[j]
            if gi >= 0:
                if bi < 0:
                    cv2.fillConvexPoly(lab, pts, world.ground[gi].class_id << _CLASS_SHIFT, _LINE, _SHIFT)
                else:
                    cv2.fillConvexPoly(img, pts, strip_cols[gi][bi], _LINE, _SHIFT)
            else:
                d = details[bi]
                if d.label:
                    cv2.fillConvexPoly(lab, pts, d.class_id << _CLASS_SHIFT, _LINE, _SHIFT)
                if img is not None:
                    cv2.fillConvexPoly(img, pts, det_cols[bi], _LINE, _SHIFT)

    def _draw_shadows(self, cam: CameraModel, rot, c, img: np.ndarray, units: list[_Unit]) -> None:
        """Image-only shadows of things on the ground: the footprint swept away from the sun in sunny
        scenes, a soft contact patch otherwise. They darken whatever ground lies below."""
        look = self.world.look
        sun = np.asarray(look.sun_dir)
        H = self.config.height
        k4 = _k4(cam)
        polys = []
        for u in units:
            if u.actor < 0 or u.depth > 70.0:
                continue
            x0, x1, z0, z1 = u.footprint
            pad = 0.08
            rect = np.array([[x0 - pad, z0 - pad], [x1 + pad, z0 - pad], [x1 + pad, z1 + pad], [x0 - pad, z1 + pad]])
            if look.shadows:
                h = -u.mesh.aabb[2]  # top height
                off = np.array([sun[0], sun[2]]) * min(h / max(-sun[1], 0.35), 3.5 * h)
                shrink = np.array([[0.15, 0.0], [-0.15, 0.0], [-0.15, 0.0], [0.15, 0.0]]) if x1 - x0 > 1.0 else 0.0
                rect = np.concatenate([rect, rect + shrink + off])
                rect = cv2.convexHull(rect.astype(np.float32)).reshape(-1, 2).astype(np.float64)
            pw = np.stack([rect[:, 0], np.zeros(len(rect)), rect[:, 1]], 1)
            pc = (pw - c) @ rot.T
            if pc[:, 2].max() < NEAR_M:
                continue
            if pc[:, 2].min() < NEAR_M:
                pc = _clip_near(pc)
                if len(pc) < 3:
                    continue
            polys.append(_project_clipped(pc, k4))
        if not polys:
            return
        lo = max(0, int(min(p[:, 1].min() for p in polys) // _ONE))
        if lo >= H:
            return
        mask = np.zeros((H - lo, img.shape[1]), np.uint8)
        off = np.array([0, lo * _ONE], np.int32)
        for p in polys:
            cv2.fillConvexPoly(mask, p - off, 255, _LINE, _SHIFT)
        if look.shadows:
            strength = 0.55
        else:
            mask = cv2.blur(mask, (5, 5))
            strength = 0.7
        roi = img[lo:]
        dark = cv2.multiply(roi, (strength, strength, strength, 1.0))
        cv2.copyTo(dark, mask, roi)

    # ------------------------------------------------------------------ objects
    def _prepare_units(self, k, cam: CameraModel, rot, c, shade: "_Shade", draw_image: bool
                       ) -> tuple[list[_Unit], _FrameGeometry]:
        world = self.world
        pack = self._pack
        cz = c[2]
        reach = self.config.view_distance_m
        H, W = self.config.height, self.config.width
        fy = cam.intrinsics.fy
        yaw = world.ego[k, 2]
        units: list[_Unit] = []
        # everything is gathered in world coordinates, then moved to the camera in one go
        i0 = int(np.searchsorted(pack.z0, cz - 10.0 - pack.max_len))
        i1 = int(np.searchsorted(pack.z0, cz + reach * 1.4, side="right"))
        vs, ve = pack.v_start[i0], pack.v_start[i1]
        fs, fe = pack.f_start[i0], pack.f_start[i1]
        ds, de = pack.d_start[i0], pack.d_start[i1]
        vw = [pack.verts[vs:ve]]
        nw = [pack.normals[fs:fe]]
        cw = [pack.centers[fs:fe]]
        base = [pack.colors[fs:fe]]
        pads = [pack.face_pad[fs:fe] - vs]
        labels = [pack.labels[fs:fe]]
        lengths = [pack.face_len[fs:fe]]
        det_parent = [pack.det_parent[ds:de] - fs]
        det_base = [pack.det_color[ds:de]]
        zl = _in_view(pack.cx[i0:i1], pack.cz[i0:i1], pack.radius[i0:i1], c, yaw, self._tan_half_fov, reach * 1.4)
        keep = (zl > -1e9) & (pack.z0[i0:i1] <= cz + pack.reach[i0:i1] * reach)
        bb_static = -rot @ c
        for i in (np.flatnonzero(keep) + i0).tolist():
            mesh = pack.meshes[i]
            bb = None if mesh.billboards is None else mesh.billboards.centers @ rot.T + bb_static
            units.append(_Unit(mesh, int(pack.v_start[i] - vs), int(pack.f_start[i] - fs), int(pack.d_start[i] - ds),
                               bb, pack.footprints[i], -1, None))
        nv, nf, nd = int(ve - vs), int(fe - fs), int(de - ds)
        poses = self._poses[:, k]
        zl = _in_view(poses[:, 0], poses[:, 1], self._radii, c, yaw, self._tan_half_fov, reach)
        near = np.flatnonzero(zl > -1e9)
        # level of detail from the height on screen: full, fewer faces, or one box
        h_px = fy * self._heights[near] / np.maximum(zl[near], 0.5)
        for ai, (x, z, heading), hp in zip(near.tolist(), poses[near].tolist(), h_px.tolist()):
            a = world.actors[ai]
            model = a.model
            mesh = model.mesh
            if hp < 0.035 * H and model.far is not None:
                mesh = model.far
            elif hp < 0.09 * H and model.lod is not None:
                mesh = model.lod
            if mesh.anims:
                local, normals, centers = _animate(mesh, a.phase[k])
            else:
                local, normals, centers = None, mesh.normals, mesh.centers
            verts = mesh.verts if local is None else local
            t = np.array([x, 0.0, z])
            if heading == 0.0:  # most things drive along the street: no rotation needed
                vw.append(verts + t)
                nw.append(normals)
                cw.append(centers + t)
                ax0, ax1, _, _, az0, az1 = mesh.aabb
                fp = (x + ax0, x + ax1, z + az0, z + az1)
            else:
                r_obj = _rot_y(heading)
                vw.append(verts @ r_obj.T + t)
                nw.append(normals @ r_obj.T)
                cw.append(centers @ r_obj.T + t)
                ax0, ax1, _, _, az0, az1 = mesh.aabb
                corners = np.array([[ax0, 0, az0], [ax1, 0, az0], [ax0, 0, az1], [ax1, 0, az1]]) @ r_obj.T
                fp = (x + corners[:, 0].min(), x + corners[:, 0].max(), z + corners[:, 2].min(),
                      z + corners[:, 2].max())
            units.append(_Unit(mesh, nv, nf, nd, None, fp, ai, local))
            base.append(mesh.colors)
            pads.append(mesh.face_pad + nv)
            labels.append(_face_labels(mesh))
            lengths.append(_face_lengths(mesh))
            if mesh.details:
                det_parent.append(_detail_parents(mesh) + nf)
                det_base.append(_detail_colors(mesh))
            nv += len(verts)
            nf += len(mesh.faces)
            nd += len(mesh.details)
        V = (np.concatenate(vw) - c) @ rot.T
        NW = np.concatenate(nw)
        C = (np.concatenate(cw) - c) @ rot.T
        N = NW @ rot.T
        pad = np.concatenate(pads)
        z = V[:, 2]
        front_idx = np.flatnonzero(np.einsum("ij,ij->i", N, C) < 0)
        fpad = pad[front_idx]
        cut = z[fpad].min(axis=1) < NEAR_M if len(fpad) else np.zeros(0, bool)
        uv16 = self._project16(cam, V) if len(V) else np.zeros((0, 2), np.int32)
        fpts = uv16[fpad]
        lens = np.concatenate(lengths)[front_idx].tolist()
        pts = [None if cj else fpts[j, :n] for j, (n, cj) in enumerate(zip(lens, cut.tolist()))]
        lab_front = np.concatenate(labels)[front_idx]
        colors = detail_colors = None
        if draw_image and len(C):
            dist = np.sqrt(np.einsum("ij,ij->i", C, C))
            colors = shade.faces(np.concatenate(base)[front_idx], NW[front_idx], dist[front_idx]).tolist()
            par = np.concatenate(det_parent)
            if len(par):
                detail_colors = shade.faces(np.concatenate(det_base), NW[par], dist[par]).tolist()
        geo = _FrameGeometry(V, uv16, front_idx.tolist(), fpad, pts, lab_front.tolist(),
                             (lab_front & _TRACK_MASK).tolist(), colors, detail_colors)
        if not units:
            return [], geo
        # per-unit front-face ranges, screen boxes, depth and near-plane crossing, by segment reductions
        vstarts = np.array([u.v0 for u in units])
        fstarts = np.array([u.f0 for u in units])
        nfaces = np.array([len(u.mesh.faces) for u in units])
        nverts = np.array([len(u.mesh.verts) for u in units])
        fa = np.searchsorted(front_idx, fstarts).tolist()
        fb = np.searchsorted(front_idx, fstarts + nfaces).tolist()
        has_v = (nverts > 0).tolist()
        counts = nfaces
        if len(V):
            uvf = uv16 / _ONE
            lo = _segments(np.minimum, uvf, vstarts, vstarts + nverts).tolist()
            hi = _segments(np.maximum, uvf, vstarts, vstarts + nverts).tolist()
            zmin = _segments(np.minimum, z, vstarts, vstarts + nverts).tolist()
            zmax = _segments(np.maximum, z, vstarts, vstarts + nverts).tolist()
            csum = _segments(np.add, C, fstarts, fstarts + nfaces)
            depth = np.linalg.norm(csum / np.maximum(counts, 1)[:, None], axis=1).tolist()
        intr = cam.intrinsics
        kept: list[_Unit] = []
        for i, u in enumerate(units):
            if has_v[i]:
                u0, v0 = lo[i]
                u1, v1 = hi[i]
                crosses = zmin[i] < NEAR_M
                top_z = zmax[i]
                dep = depth[i]
            else:
                u0 = v0 = 1e9
                u1 = v1 = -1e9
                crosses, top_z, dep = False, -1.0, 0.0
            if crosses:
                u0, v0, u1, v1 = -1e9, -1e9, 1e9, 1e9
            if u.bb is not None:
                bz = u.bb[:, 2]
                ok = bz >= NEAR_M
                top_z = max(top_z, float(bz.max()))
                if ok.any():
                    rr = u.mesh.billboards.radii[ok] * intr.fx / bz[ok]
                    ub = intr.fx * u.bb[ok, 0] / bz[ok] + intr.cx
                    vb = intr.fy * u.bb[ok, 1] / bz[ok] + intr.cy
                    u0, u1 = min(u0, float((ub - rr).min())), max(u1, float((ub + rr).max()))
                    v0, v1 = min(v0, float((vb - rr).min())), max(v1, float((vb + rr).max()))
                    if not has_v[i]:
                        dep = float(np.linalg.norm(u.bb.mean(axis=0)))
                if draw_image:
                    u.bb_colors = shade.billboards(u.mesh.billboards.colors, np.linalg.norm(u.bb, axis=1)).tolist()
            if top_z < NEAR_M or u1 < -1 or v1 < -1 or u0 > W or v0 > H:
                continue
            u.screen = (u0, v0, u1, v1)
            u.depth = dep
            u.crosses_near = crosses
            u.small = (u1 - u0) < 16 and (v1 - v0) < 16
            u.fa, u.fb = fa[i], fb[i]
            kept.append(u)
        return kept, geo

    # ------------------------------------------------------------------ annotations
    def _annotate(self, k, cam: CameraModel, rot, c, units: list[_Unit], polys: dict[int, list[np.ndarray]],
                  sem: np.ndarray, inst: np.ndarray, uncovered: set[int]) -> list[ObjectAnnotation]:
        """Per-thing ground truth; things in ``uncovered`` have nothing drawn over them (and no other
        instance in their unit), so their unoccluded silhouette is exactly their visible pixels."""
        H, W = self.config.height, self.config.width
        min_area = self.config.min_thing_area_px
        world = self.world
        unit_of_track: dict[int, _Unit] = {}
        for u in units:
            if u.actor >= 0:
                for t, _cls in world.actors[u.actor].model.tracks:
                    unit_of_track[t] = u
        objects: list[ObjectAnnotation] = []
        r_level = cam.mounting.rotation_level_to_camera()  # level -> optical
        for tid in sorted(polys):
            plist = polys[tid]
            allp = np.concatenate(plist)
            lo = allp.min(axis=0) // _ONE - 1
            hi = allp.max(axis=0) // _ONE + 2
            # the whole (unclipped) silhouette decides whether the thing is big enough to be labelled:
            # the sum of its polygons' areas bounds the silhouette's area from above
            full_w, full_h = int(hi[0] - lo[0]), int(hi[1] - lo[1])
            tiny = False
            if full_w * full_h < 4 * min_area:
                if sum(abs(cv2.contourArea(p)) for p in plist) / (_ONE * _ONE) < min_area:
                    tiny = True
                else:
                    buf = np.zeros((full_h, full_w), np.uint8)
                    off = (lo * _ONE).astype(np.int32)
                    for p in plist:
                        cv2.fillConvexPoly(buf, p - off, 1, _LINE, _SHIFT)
                    tiny = int(cv2.countNonZero(buf)) < min_area
            x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
            x1, y1 = min(W, int(hi[0])), min(H, int(hi[1]))
            if x1 <= x0 or y1 <= y0:
                continue
            sub_inst = inst[y0:y1, x0:x1]
            mine = cv2.compare(sub_inst, tid, cv2.CMP_EQ)
            area = int(cv2.countNonZero(mine))
            if tiny:
                if area:
                    m = mine > 0
                    sem[y0:y1, x0:x1][m] = VOID
                    sub_inst[m] = 0
                continue
            if tid in uncovered:
                alone = mine
            else:
                alone = np.zeros((y1 - y0, x1 - x0), np.uint8)
                off = np.array([x0 * _ONE, y0 * _ONE], np.int32)
                for p in plist:
                    cv2.fillConvexPoly(alone, p - off, 1, _LINE, _SHIFT)
            alone_px = int(cv2.countNonZero(alone))
            if alone_px == 0:
                continue
            bx, by, bw, bh = cv2.boundingRect(alone)
            box = (float(x0 + bx), float(y0 + by), float(x0 + bx + bw), float(y0 + by + bh))
            frac = area / alone_px
            occluder = 0
            if frac < 0.5:
                hidden = sub_inst[(alone > 0) & (mine == 0)]
                if hidden.size:
                    vals, counts = np.unique(hidden, return_counts=True)
                    occluder = int(vals[np.argmax(counts)])
            u = unit_of_track[tid]
            a = world.actors[u.actor]
            cls = dict(a.model.tracks)[tid]
            objects.append(ObjectAnnotation(
                track_id=int(tid), class_id=int(cls), area_px=area, visible_fraction=float(frac),
                amodal_box_xyxy=box, position_m=_contact_point(a, u, tid, r_level, rot, c, k),
                occluder_track_id=occluder))
        return objects

    # ------------------------------------------------------------------ image effects
    def _post(self, k: int, img: np.ndarray, sem: np.ndarray) -> np.ndarray:
        cfg = self.config
        a = self._assets
        if not cfg.effects:
            return img
        H, W = cfg.height, cfg.width
        rng = rng_for(self.seed, "frame", k)
        oy, ox = (int(v) for v in rng.integers(0, a.pad, 2))
        amp = cv2.LUT(sem, a.grain_lut)
        pos = cv2.multiply(a.grain_pos[oy:oy + H, ox:ox + W], amp, scale=1.0 / 64)
        neg = cv2.multiply(a.grain_neg[oy:oy + H, ox:ox + W], amp, scale=1.0 / 64)
        img = cv2.add(img, cv2.cvtColor(pos, cv2.COLOR_GRAY2RGB))
        img = cv2.subtract(img, cv2.cvtColor(neg, cv2.COLOR_GRAY2RGB))
        if a.rain is not None:
            ry, rx = (int(v) for v in rng.integers(0, a.pad, 2))
            img = cv2.add(img, a.rain[ry:ry + H, rx:rx + W])
        r = rng.random()
        scale = W / 1024.0
        blur_p = self.world.look.blur_probability
        if r < blur_p * 0.6:  # motion blur, mostly horizontal
            n = max(3, int(rng.uniform(4, 12) * scale) | 1)
            img = cv2.blur(img, (n, max(1, n // 4)))
        elif r < blur_p:  # defocus
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.2, 2.5) * scale)
        else:
            img = cv2.GaussianBlur(img, (3, 3), 0.6)
        ny, nx = (int(v) for v in rng.integers(0, a.pad, 2))
        img = cv2.add(img, a.noise_pos[ny:ny + H, nx:nx + W])
        img = cv2.subtract(img, a.noise_neg[ny:ny + H, nx:nx + W])
        return img


class _Shade:
    """Lighting, colour temperature, exposure and haze applied to flat face colours."""

    def __init__(self, look: tx.SceneLook, exposure: float) -> None:
        self.look = look
        self.gain = np.asarray(look.tint) * exposure
        self.sun = np.asarray(look.sun_dir)
        self.fog = np.asarray(look.fog_rgb) * exposure
        self.fog_d = look.fog_distance_m
        self.ground_lam = look.ambient + look.diffuse * max(0.0, -look.sun_dir[1])

    def faces(self, base: np.ndarray, n_world: np.ndarray, dist: np.ndarray) -> np.ndarray:
        lam = self.look.ambient + self.look.diffuse * np.clip(n_world @ self.sun, 0.0, 1.0)
        lam = lam + 0.08 * np.clip(-n_world[:, 1], 0.0, 1.0) - 0.05 * np.abs(n_world[:, 2])
        f = 1.0 - np.exp(-dist / self.fog_d)
        col = base * (lam[:, None] * self.gain) * (1.0 - f[:, None]) + self.fog * f[:, None]
        return np.clip(col, 0.0, 255.0)

    def billboards(self, base: np.ndarray, dist: np.ndarray) -> np.ndarray:
        lam = self.look.ambient + 0.5 * self.look.diffuse
        f = 1.0 - np.exp(-dist / self.fog_d)
        col = base * (lam * self.gain) * (1.0 - f[:, None]) + self.fog * f[:, None]
        return np.clip(col, 0.0, 255.0)

    def ground_many(self, base: np.ndarray, dist: np.ndarray, diagonal_from: int | None = None) -> np.ndarray:
        """Ground colours: (G, 3) bases at (D,) distances -> (G, D, 3); with ``diagonal_from`` set,
        base i is seen at distance ``dist[diagonal_from + i]`` only -> (G, 3)."""
        if diagonal_from is not None:
            f = 1.0 - np.exp(-dist[diagonal_from:diagonal_from + len(base)] / self.fog_d)
            col = base * (self.ground_lam * self.gain) * (1.0 - f[:, None]) + self.fog * f[:, None]
        else:
            f = 1.0 - np.exp(-dist / self.fog_d)
            col = base[:, None, :] * (self.ground_lam * self.gain) * (1.0 - f[None, :, None]) + self.fog * f[None, :, None]
        return np.clip(col, 0.0, 255.0)


def _in_view(x: np.ndarray, z: np.ndarray, radius: np.ndarray, c: np.ndarray, yaw: float, tan_half_fov: float,
             reach: float) -> np.ndarray:
    """Forward (level-frame) distance of ground circles that may be in the horizontal field of view,
    -inf for those that cannot."""
    dx, dz = x - c[0], z - c[2]
    cs, sn = math.cos(yaw), math.sin(yaw)
    xl = cs * dx - sn * dz
    zl = sn * dx + cs * dz
    slack = radius * math.sqrt(1.0 + tan_half_fov ** 2)
    ok = (zl > NEAR_M - radius) & (zl < reach + radius) & (np.abs(xl) <= zl * tan_half_fov + slack)
    return np.where(ok, zl, -np.inf)


def _ground_quad(x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    return np.array([[x0, 0.0, z0], [x1, 0.0, z0], [x1, 0.0, z1], [x0, 0.0, z1]])


def _animate(mesh: Mesh, phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local vertices, face normals and face centres with the limbs swung to ``phase``."""
    v = mesh.verts.copy()
    normals = mesh.normals.copy()
    centers = mesh.centers.copy()
    for an in mesh.anims:
        r = _rot_x(an.amplitude_rad * math.sin(phase + an.phase))
        v[an.v0:an.v1] = (v[an.v0:an.v1] - an.pivot) @ r.T + an.pivot
        normals[an.f0:an.f1] = normals[an.f0:an.f1] @ r.T
        centers[an.f0:an.f1] = (centers[an.f0:an.f1] - an.pivot) @ r.T + an.pivot
    return v, normals, centers


def _paint_order(units: list[_Unit], c: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Far-to-near order, exact for disjoint ground footprints (see the module docstring), and per unit
    whether a unit drawn later overlaps its screen box (grown by a pixel for rasterisation slack)."""
    n = len(units)
    if n == 0:
        return [], np.zeros(0, bool)
    fp = np.array([u.footprint for u in units])
    sc = np.array([u.screen for u in units]) + np.array([-1.0, -1.0, 1.0, 1.0])
    depth = np.array([u.depth for u in units])
    cx, cz = c[0], c[2]
    overlap = ((sc[:, None, 0] < sc[None, :, 2]) & (sc[None, :, 0] < sc[:, None, 2])
               & (sc[:, None, 1] < sc[None, :, 3]) & (sc[None, :, 1] < sc[:, None, 3]))
    np.fill_diagonal(overlap, False)
    x0, x1, z0, z1 = fp[:, 0], fp[:, 1], fp[:, 2], fp[:, 3]
    i_left = x1[:, None] <= x0[None, :]  # i left of j
    i_right = x0[:, None] >= x1[None, :]
    i_near = z1[:, None] <= z0[None, :]  # i before j along z
    i_far = z0[:, None] >= z1[None, :]
    i_front = ((i_left & (cx <= x1[:, None])) | (i_right & (cx >= x0[:, None]))
               | (i_near & (cz <= z1[:, None])) | (i_far & (cz >= z0[:, None])))
    j_front = ((i_left & (cx >= x0[None, :])) | (i_right & (cx <= x1[None, :]))
               | (i_near & (cz >= z0[None, :])) | (i_far & (cz <= z1[None, :])))
    separated = i_left | i_right | i_near | i_far
    front = np.where(separated, i_front & ~j_front, depth[:, None] < depth[None, :])
    before = front.T & overlap  # before[a, b]: a must be drawn before b (b in front of a)
    remaining = np.ones(n, bool)
    order: list[int] = []
    while remaining.any():
        blocked = (before & remaining[:, None]).any(axis=0)
        ready = remaining & ~blocked
        if not ready.any():  # a cycle: break it at the farthest object
            idx = np.flatnonzero(remaining)
            ready = np.zeros(n, bool)
            ready[idx[np.argmax(depth[idx])]] = True
        idx = np.flatnonzero(ready)
        idx = idx[np.argsort(-depth[idx], kind="stable")]
        order.extend(int(i) for i in idx)
        remaining[idx] = False
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    covered = (overlap & (pos[None, :] > pos[:, None])).any(axis=1)
    return order, covered


def _draw_unit(u: _Unit, geo: _FrameGeometry, img, lab, polys: dict[int, list[np.ndarray]],
               draw_image: bool, k4: tuple[float, float, float, float]) -> None:
    mesh = u.mesh
    details_by_parent = _details_by_parent(mesh) if draw_image and not u.small else None
    all_pts, labels, tracks, colors = geo.pts, geo.labels, geo.tracks, geo.colors
    fill = cv2.fillConvexPoly
    for j in range(u.fa, u.fb):
        pts = all_pts[j]
        if pts is None:
            poly = _clip_near(geo.cam[geo.pad[j]])
            if len(poly) < 3:
                continue
            pts = _project_clipped(poly, k4)
        if draw_image:
            fill(img, pts, colors[j], _LINE, _SHIFT)
        fill(lab, pts, labels[j], _LINE, _SHIFT)
        tid = tracks[j]
        if tid:
            polys.setdefault(tid, []).append(pts)
        if details_by_parent:
            fl = geo.face[j] - u.f0
            if fl in details_by_parent:
                for gi in details_by_parent[fl]:
                    vidx = mesh.details[gi].vidx + u.v0
                    if u.crosses_near:
                        keep = geo.cam[vidx, 2].min(axis=1) >= NEAR_M
                        if not keep.any():
                            continue
                        vidx = vidx[keep]
                    cv2.fillPoly(img, geo.uv16[vidx], geo.detail_colors[u.d0 + gi], _LINE, _SHIFT)
    bbx = mesh.billboards
    if bbx is not None and u.bb is not None:
        cz = u.bb[:, 2]
        fx, fy, cxp, cyp = k4
        value = int(bbx.class_id) << _CLASS_SHIFT
        for i in np.argsort(-cz):
            if cz[i] < NEAR_M + bbx.radii[i] * 0.2:
                continue
            r = bbx.radii[i]
            uc = fx * u.bb[i, 0] / cz[i] + cxp
            vc = fy * u.bb[i, 1] / cz[i] + cyp
            pts = np.round((np.stack([uc + bbx.shapes[i][:, 0] * fx * r / cz[i],
                                      vc + bbx.shapes[i][:, 1] * fy * r / cz[i]], 1)) * _ONE).astype(np.int32)
            if draw_image:
                cv2.fillPoly(img, [pts], u.bb_colors[i], _LINE, _SHIFT)
            cv2.fillPoly(lab, [pts], value, _LINE, _SHIFT)


def _segments(ufunc: np.ufunc, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """ufunc.reduce over arr[starts[i]:ends[i]] for each i (increasing, non-empty segments)."""
    padded = np.concatenate([arr, arr[:1]])  # reduceat needs every index < len
    idx = np.stack([starts, ends], axis=1).ravel()
    return ufunc.reduceat(padded, idx, axis=0)[0::2]


def _k4(cam: CameraModel) -> tuple[float, float, float, float]:
    k = cam.intrinsics
    return (k.fx, k.fy, k.cx, k.cy)


def _project_clipped(poly: np.ndarray, k4: tuple[float, float, float, float]) -> np.ndarray:
    """Pinhole projection of near-clipped (k, 3) points (all z >= NEAR_M) to cv2 fixed point."""
    fx, fy, cx, cy = k4
    uv = np.stack([fx * poly[:, 0] / poly[:, 2] + cx, fy * poly[:, 1] / poly[:, 2] + cy], 1)
    return np.round(uv * _ONE).astype(np.int32)


def _face_labels(mesh: Mesh) -> np.ndarray:
    cached = mesh.__dict__.get("_face_labels")
    if cached is None:
        cached = mesh.__dict__["_face_labels"] = (mesh.classes << _CLASS_SHIFT) | mesh.tracks
    return cached


def _detail_parents(mesh: Mesh) -> np.ndarray:
    cached = mesh.__dict__.get("_detail_parents")
    if cached is None:
        cached = mesh.__dict__["_detail_parents"] = np.array([d.parent for d in mesh.details], dtype=np.int64)
    return cached


def _detail_colors(mesh: Mesh) -> np.ndarray:
    cached = mesh.__dict__.get("_detail_colors")
    if cached is None:
        cached = mesh.__dict__["_detail_colors"] = np.stack([d.color for d in mesh.details])
    return cached


def _face_lengths(mesh: Mesh) -> np.ndarray:
    cached = getattr(mesh, "_face_lengths", None)
    if cached is None:
        cached = np.array([len(f) for f in mesh.faces], dtype=np.int64)
        mesh._face_lengths = cached  # type: ignore[attr-defined]
    return cached


def _details_by_parent(mesh: Mesh) -> dict[int, list[int]]:
    cached = getattr(mesh, "_details_by_parent", None)
    if cached is None:
        cached = {}
        for gi, g in enumerate(mesh.details):
            cached.setdefault(g.parent, []).append(gi)
        mesh._details_by_parent = cached  # type: ignore[attr-defined]
    return cached


def _contact_point(a: Actor, u: _Unit, tid: int, r_level: np.ndarray, rot: np.ndarray, c: np.ndarray, k: int
                   ) -> tuple[float, float, float]:
    """Bottom-centre ground contact point in the optical frame: the ground-touching vertices nearest
    to the camera (smallest forward distance), averaged. For a rider, those of its vehicle."""
    idx = contact_indices(u.mesh, tid)
    local = u.mesh.verts if u.local is None else u.local
    p = local[idx].copy()
    p[:, 1] = 0.0
    x, z, heading = a.pose[k]
    world_pts = p @ _rot_y(heading).T + np.array([x, 0.0, z])
    cam_pts = (world_pts - c) @ rot.T
    level_z = (cam_pts @ r_level)[:, 2]  # rows @ R == (R.T @ p) per row: optical -> level
    m = cam_pts[level_z <= level_z.min() + 0.05].mean(axis=0)
    return (float(m[0]), float(m[1]), float(m[2]))


def _find_events(frames: list[list[ObjectAnnotation]], threshold: float) -> list[OcclusionEvent]:
    """Occlusion episodes (see SyntheticSequence.occlusion_events) from per-frame annotations."""
    n = len(frames)
    per_track: dict[int, dict[int, ObjectAnnotation]] = {}
    for k, objs in enumerate(frames):
        for o in objs:
            per_track.setdefault(o.track_id, {})[k] = o
    events: list[OcclusionEvent] = []
    for tid, seen in per_track.items():
        k = 0
        while k < n:
            before = seen.get(k - 1)
            if k in seen and seen[k].visible_fraction < threshold and before is not None \
                    and before.visible_fraction >= threshold:
                e = k
                while e in seen and seen[e].visible_fraction < threshold:
                    e += 1
                after = seen.get(e)
                hidden = [j for j in range(k, e) if seen[j].area_px == 0]
                if after is not None and after.visible_fraction >= threshold and hidden:
                    occ: dict[int, int] = {}
                    for j in hidden:
                        occ[seen[j].occluder_track_id] = occ.get(seen[j].occluder_track_id, 0) + 1
                    best = max(sorted(occ), key=lambda t: occ[t])
                    events.append(OcclusionEvent(tid, best, hidden[0], hidden[-1], hidden[-1] - hidden[0] + 1))
                k = max(e, k + 1)
            else:
                k += 1
    events.sort(key=lambda ev: (ev.start_frame, ev.track_id))
    return events


def generate_sequence(seed: int, num_frames: int, config: SynthConfig | None = None) -> Iterator[PanopticFrame]:
    """Render frames 0..num_frames-1 of sequence ``seed`` in order."""
    seq = SyntheticSequence(seed, num_frames, config)
    for k in range(num_frames):
        yield seq.render(k)
