"""Rasterising the simulated world into images and exact panoptic labels.

Every polygon is filled once into the image (colour), the semantic map (train id) and
the instance map (track id, 0 for stuff) with the same integer coordinates, so labels
are exact and agree with the picture; the image alone gets details (windows, lights),
grain, blur and noise afterwards. Visibility comes from the same fills: each thing is
also rasterised alone into a small buffer, which gives its unoccluded pixel count and
its amodal box.

Draw order (painter's algorithm): sky, the ground (coplanar regions, markings), then
every object (buildings, props, things) in an order from far to near that is exact for
objects standing on the ground with disjoint footprints: for two footprints separated
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
from panoptic_ros.synth.world import NEAR_M, SKY, GroundRect, Mesh, SynthConfig, World, build_world

_SHIFT = 4  # sub-pixel bits of cv2 polygon coordinates
_ONE = 1 << _SHIFT
_LINE = cv2.LINE_8
_GROUND_BANDS_M = np.array([-30.0, 4.0, 7.0, 11.0, 16.0, 23.0, 32.0, 45.0, 62.0, 85.0, 115.0, 160.0, 230.0, 330.0,
                            480.0, 800.0, 3000.0])


@dataclass(frozen=True)
class OcclusionEvent:
    """A visible thing that became fully hidden (0 visible pixels while inside the image) and re-emerged.

    ``start_frame``..``end_frame`` (inclusive) are the hidden frames; the object is visible
    in ``start_frame - 1`` and ``end_frame + 1``. ``occluder_track_id`` is the thing that
    covered it in most hidden frames (0 when stuff did).
    """

    track_id: int
    occluder_track_id: int
    start_frame: int
    end_frame: int
    length: int


@dataclass
class _Unit:
    """One object prepared for drawing in one frame."""

    mesh: Mesh
    cam: np.ndarray  # (n, 3) vertices in the optical frame
    uv16: np.ndarray  # (n, 2) int32 pixel coordinates << _SHIFT
    front: np.ndarray  # (F,) bool, face visible (front-facing)
    colors: list  # per face RGB list
    detail_colors: list  # per detail group
    bb_cam: np.ndarray | None  # (B, 3) billboard centres
    bb_colors: list
    footprint: tuple[float, float, float, float]
    depth: float
    screen: tuple[float, float, float, float]  # u0 v0 u1 v1
    actor: int  # index into world.actors, -1 for stuff
    local: np.ndarray | None  # animated local vertices (actors)
    small: bool  # too small on screen for details


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
        self.seed = int(seed)
        self.num_frames = int(num_frames)
        self.config = config if config is not None else SynthConfig()
        if not isinstance(self.config, SynthConfig):
            raise TypeError(f"config must be a SynthConfig, got {type(self.config).__name__}")
        self.world = build_world(self.seed, self.num_frames, self.config)
        self.name = f"synth_{self.seed:06d}"
        self.camera = CameraModel(self.world.intrinsics,
                                  CameraMounting(self.world.camera_height_m, self.world.pitch_rad))
        self._assets: _Assets | None = None
        self._objects: dict[int, list[ObjectAnnotation]] = {}
        self._events: list[OcclusionEvent] | None = None

    def __len__(self) -> int:
        return self.num_frames

    # ------------------------------------------------------------------ public
    def render(self, k: int) -> PanopticFrame:
        """Frame ``k``: image, exact labels and per-object ground truth."""
        k = self._check_index(k)
        img, sem, inst, objects, cam = self._rasterise(k, draw_image=True)
        self._objects[k] = objects
        return PanopticFrame(image=img, semantic=sem, instance=inst, objects=objects, camera=cam,
                             stamp_ns=int(round(k * 1e9 / self.config.fps)), frame_index=k, sequence=self.name)

    def objects(self, k: int) -> list[ObjectAnnotation]:
        """Frame ``k``'s object annotations only (labels are rasterised, the image is not)."""
        k = self._check_index(k)
        if k not in self._objects:
            self._objects[k] = self._rasterise(k, draw_image=False)[3]
        return self._objects[k]

    def occlusion_events(self) -> list[OcclusionEvent]:
        """Every full occlusion with re-emergence, from the rendered visibility of all frames."""
        if self._events is None:
            self._events = _find_events([self.objects(k) for k in range(self.num_frames)])
        return list(self._events)

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
        sem = np.full((H, W), SKY, np.uint8)
        inst = np.zeros((H, W), np.int32)
        img = None
        if draw_image:
            if self._assets is None:
                self._assets = _Assets(world)
            img = self._sky(cam, exposure)
        shade = _Shade(look, exposure, rot)
        self._draw_ground(cam, rot, c, img, sem, shade)
        units = self._prepare_units(k, cam, rot, c, shade, draw_image)
        order = _paint_order(units, c)
        polys: dict[int, list[np.ndarray]] = {}
        k4 = (cam.intrinsics.fx, cam.intrinsics.fy, cam.intrinsics.cx, cam.intrinsics.cy)
        for i in order:
            _draw_unit(units[i], img, sem, inst, polys, draw_image, k4)
        objects = self._annotate(k, cam, rot, c, units, polys, sem, inst)
        if draw_image:
            img = self._post(k, img, sem)
        return img, sem, inst, objects, cam

    def _sky(self, cam: CameraModel, exposure: float) -> np.ndarray:
        a = self._assets
        H, W = self.config.height, self.config.width
        hv = cam.horizon_v()
        start = int(round(a.sky_horizon_row - hv))
        start = min(max(start, 0), a.sky.shape[0] - H)
        img = a.sky[start:start + H].copy()
        if abs(exposure - 1.0) > 1e-3:
            img = cv2.convertScaleAbs(img, alpha=exposure)
        return img

    def _project16(self, cam: CameraModel, pts_cam: np.ndarray) -> np.ndarray:
        p = pts_cam.copy()
        p[:, 2] = np.maximum(p[:, 2], NEAR_M)
        uv = cam.project(p)
        return np.round(uv * _ONE).astype(np.int32)

    # ------------------------------------------------------------------ ground
    def _draw_ground(self, cam, rot, c, img, sem, shade: "_Shade") -> None:
        world = self.world
        cz = c[2]
        bands = cz + _GROUND_BANDS_M
        quads, meta = [], []
        for gi, g in enumerate(world.ground):
            if g.label:
                quads.append(_ground_quad(g.x0, g.x1, max(g.z0, cz - 30.0), g.z1))
                meta.append((gi, -1))
            if img is not None:
                for bi in range(len(bands) - 1):
                    za, zb = max(g.z0, bands[bi]), min(g.z1, bands[bi + 1])
                    if zb > za:
                        quads.append(_ground_quad(g.x0, g.x1, za, zb))
                        meta.append((gi, bi))
        reach = cz + self.config.view_distance_m
        details = [d for d in world.ground_details if d.z1 > cz - 5.0 and d.z0 < reach]
        for di, d in enumerate(details):
            quads.append(_ground_quad(d.x0, d.x1, d.z0, d.z1))
            meta.append((-1, di))
        if not quads:
            return
        q = np.stack(quads)  # (m, 4, 3)
        qc = (q.reshape(-1, 3) - c) @ rot.T
        qc = qc.reshape(-1, 4, 3)
        uv16 = self._project16(cam, qc.reshape(-1, 3)).reshape(-1, 4, 2)
        zmin = qc[:, :, 2].min(axis=1)
        zmax = qc[:, :, 2].max(axis=1)
        band_mid = (_GROUND_BANDS_M[:-1] + _GROUND_BANDS_M[1:]) / 2
        for j, (gi, bi) in enumerate(meta):
            if zmax[j] < NEAR_M:
                continue
            if zmin[j] < NEAR_M:
                poly = _clip_near(qc[j])
                if len(poly) < 3:
                    continue
                pts = self._project16(cam, poly)
            else:
                pts = uv16[j]
            if gi >= 0:
                g = world.ground[gi]
                if bi < 0:
                    cv2.fillConvexPoly(sem, pts, int(g.class_id), _LINE, _SHIFT)
                else:
                    cv2.fillConvexPoly(img, pts, shade.ground(g.color, max(1.0, band_mid[bi])), _LINE, _SHIFT)
            else:
                d = details[bi]
                if d.label:
                    cv2.fillConvexPoly(sem, pts, int(d.class_id), _LINE, _SHIFT)
                if img is not None:
                    dist = max(1.0, float(np.linalg.norm(qc[j].mean(axis=0))))
                    cv2.fillConvexPoly(img, pts, shade.ground(d.color, dist), _LINE, _SHIFT)

    # ------------------------------------------------------------------ objects
    def _prepare_units(self, k, cam, rot, c, shade: "_Shade", draw_image: bool) -> list[_Unit]:
        world = self.world
        cz = c[2]
        reach = self.config.view_distance_m
        H, W = self.config.height, self.config.width
        units: list[_Unit] = []
        b = -rot @ c
        # stuff: already in world coordinates
        for su in world.statics:
            fx0, fx1, fz0, fz1 = su.footprint
            if fz1 < cz - 10.0 or fz0 > cz + reach * 1.4:
                continue
            u = self._make_unit(su.mesh, rot, b, None, cam, shade, su.footprint, -1, None, draw_image)
            if u is not None:
                units.append(u)
        for ai, a in enumerate(world.actors):
            x, z, heading = a.pose[k]
            if z < cz - 20.0 or z > cz + reach:
                continue
            mesh = a.model.mesh
            r_obj = _rot_y(heading)
            animated = _animate(mesh, a.phase[k]) if mesh.anims else None
            A = rot @ r_obj
            bb = rot @ (np.array([x, 0.0, z]) - c)
            ax0, ax1, _, _, az0, az1 = mesh.aabb
            corners = np.array([[ax0, 0, az0], [ax1, 0, az0], [ax0, 0, az1], [ax1, 0, az1]]) @ r_obj.T
            fp = (x + corners[:, 0].min(), x + corners[:, 0].max(), z + corners[:, 2].min(), z + corners[:, 2].max())
            u = self._make_unit(mesh, A, bb, r_obj, cam, shade, fp, ai, animated, draw_image)
            if u is not None:
                units.append(u)
        return units

    def _make_unit(self, mesh: Mesh, A, b, r_obj, cam, shade: "_Shade", footprint, actor: int,
                   animated: tuple[np.ndarray, np.ndarray, np.ndarray] | None, draw_image: bool) -> _Unit | None:
        H, W = self.config.height, self.config.width
        local = None if animated is None else animated[0]
        verts = mesh.verts if local is None else local
        pc = verts @ A.T + b
        z = pc[:, 2]
        bb_cam = None
        if mesh.billboards is not None:
            bb_cam = mesh.billboards.centers @ A.T + b
        zmax = max(z.max() if len(z) else -1.0, bb_cam[:, 2].max() if bb_cam is not None else -1.0)
        if zmax < NEAR_M:
            return None
        uv16 = self._project16(cam, pc)
        ok = z >= NEAR_M
        if ok.all():
            u0, v0 = uv16.min(axis=0) / _ONE
            u1, v1 = uv16.max(axis=0) / _ONE
        else:
            u0, v0, u1, v1 = -1e9, -1e9, 1e9, 1e9
        if bb_cam is not None:
            ok_b = bb_cam[:, 2] >= NEAR_M
            if ok_b.any():
                fxp = cam.intrinsics.fx
                r = mesh.billboards.radii[ok_b] * fxp / bb_cam[ok_b, 2]
                ub = fxp * bb_cam[ok_b, 0] / bb_cam[ok_b, 2] + cam.intrinsics.cx
                vb = cam.intrinsics.fy * bb_cam[ok_b, 1] / bb_cam[ok_b, 2] + cam.intrinsics.cy
                u0, u1 = min(u0, (ub - r).min()), max(u1, (ub + r).max())
                v0, v1 = min(v0, (vb - r).min()), max(v1, (vb + r).max())
        if u1 < -1 or v1 < -1 or u0 > W or v0 > H:
            return None
        if animated is None:
            normals, centers = mesh.normals, mesh.centers
        else:
            normals, centers = animated[1], animated[2]
        n_cam = normals @ A.T
        c_cam = centers @ A.T + b
        front = np.einsum("ij,ij->i", n_cam, c_cam) < 0
        colors, detail_colors, bb_colors = [], [], []
        dist = np.linalg.norm(c_cam, axis=1)
        if draw_image:
            n_world = normals if r_obj is None else normals @ r_obj.T
            cols = shade.faces(mesh.colors, n_world, dist)
            colors = cols.tolist()
            if mesh.details:
                parents = np.array([d.parent for d in mesh.details])
                base = np.stack([d.color for d in mesh.details])
                detail_colors = shade.faces(base, n_world[parents], dist[parents]).tolist()
            if bb_cam is not None:
                bb_colors = shade.billboards(mesh.billboards.colors, np.linalg.norm(bb_cam, axis=1)).tolist()
        fx0, fx1, fz0, fz1 = footprint
        depth = float(np.linalg.norm(c_cam.mean(axis=0))) if len(c_cam) else float(np.linalg.norm(bb_cam.mean(0)))
        small = (u1 - u0) < 6 and (v1 - v0) < 6
        return _Unit(mesh, pc, uv16, front, colors, detail_colors, bb_cam, bb_colors, footprint, depth,
                     (u0, v0, u1, v1), actor, local, small)

    # ------------------------------------------------------------------ annotations
    def _annotate(self, k, cam: CameraModel, rot, c, units: list[_Unit], polys: dict[int, list[np.ndarray]],
                  sem: np.ndarray, inst: np.ndarray) -> list[ObjectAnnotation]:
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
            # full (unclipped) silhouette area decides whether the thing is big enough to be labelled
            full_w, full_h = int(hi[0] - lo[0]), int(hi[1] - lo[1])
            tiny = False
            if full_w * full_h < 4 * min_area:
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
            if tiny:
                m = sub_inst == tid
                if m.any():
                    sem[y0:y1, x0:x1][m] = VOID
                    sub_inst[m] = 0
                continue
            alone = np.zeros((y1 - y0, x1 - x0), np.uint8)
            off = np.array([x0 * _ONE, y0 * _ONE], np.int32)
            for p in plist:
                cv2.fillConvexPoly(alone, p - off, 1, _LINE, _SHIFT)
            alone_px = int(cv2.countNonZero(alone))
            if alone_px == 0:
                continue
            mine = sub_inst == tid
            area = int(np.count_nonzero(mine))
            rows = np.flatnonzero(alone.any(axis=1))
            cols = np.flatnonzero(alone.any(axis=0))
            box = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
            frac = area / alone_px
            occluder = 0
            if frac < 0.5:
                hidden = sub_inst[(alone > 0) & ~mine]
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
        if r < self.world.look.blur_probability * 0.6:  # motion blur, mostly horizontal
            n = max(3, int(rng.uniform(4, 12) * scale) | 1)
            img = cv2.blur(img, (n, max(1, n // 4)))
        elif r < self.world.look.blur_probability:  # defocus
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.2, 2.5) * scale)
        else:
            img = cv2.GaussianBlur(img, (3, 3), 0.6)
        ny, nx = (int(v) for v in rng.integers(0, a.pad, 2))
        img = cv2.add(img, a.noise_pos[ny:ny + H, nx:nx + W])
        img = cv2.subtract(img, a.noise_neg[ny:ny + H, nx:nx + W])
        return img


class _Shade:
    """Lighting, colour temperature, exposure and haze applied to flat face colours."""

    def __init__(self, look: tx.SceneLook, exposure: float, rot: np.ndarray) -> None:
        self.look = look
        self.gain = np.asarray(look.tint) * exposure
        self.sun = np.asarray(look.sun_dir)
        self.fog = np.asarray(look.fog_rgb) * exposure
        self.fog_d = look.fog_distance_m

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

    def ground(self, base, dist: float) -> tuple[float, float, float]:
        lam = self.look.ambient + self.look.diffuse * max(0.0, -self.sun[1])
        f = 1.0 - math.exp(-dist / self.fog_d)
        col = np.asarray(base) * lam * self.gain * (1.0 - f) + self.fog * f
        col = np.clip(col, 0.0, 255.0)
        return (float(col[0]), float(col[1]), float(col[2]))


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


def _paint_order(units: list[_Unit], c: np.ndarray) -> list[int]:
    """Far-to-near order, exact for disjoint ground footprints (see the module docstring)."""
    n = len(units)
    if n == 0:
        return []
    fp = np.array([u.footprint for u in units])
    sc = np.array([u.screen for u in units])
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
    before = (front.T & overlap)  # before[a, b]: a must be drawn before b (b in front of a)
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
    return order


def _draw_unit(u: _Unit, img, sem, inst, polys: dict[int, list[np.ndarray]], draw_image: bool,
               k4: tuple[float, float, float, float]) -> None:
    mesh = u.mesh
    z = u.cam[:, 2]
    details_by_parent = mesh_details_by_parent(mesh)
    for fi in np.flatnonzero(u.front):
        idx = mesh.faces[fi]
        if z[idx].min() < NEAR_M:
            poly = _clip_near(u.cam[idx])
            if len(poly) < 3:
                continue
            pts = _project_clipped(poly, k4)
        else:
            pts = u.uv16[idx]
        cls = int(mesh.classes[fi])
        tid = int(mesh.tracks[fi])
        if draw_image:
            cv2.fillConvexPoly(img, pts, u.colors[fi], _LINE, _SHIFT)
        cv2.fillConvexPoly(sem, pts, cls, _LINE, _SHIFT)
        cv2.fillConvexPoly(inst, pts, tid, _LINE, _SHIFT)
        if tid:
            polys.setdefault(tid, []).append(pts)
        if draw_image and not u.small and fi in details_by_parent:
            for gi in details_by_parent[fi]:
                g = mesh.details[gi]
                if z[g.vidx].min() < NEAR_M:
                    keep = z[g.vidx].min(axis=1) >= NEAR_M
                    if not keep.any():
                        continue
                    cv2.fillPoly(img, u.uv16[g.vidx[keep]], u.detail_colors[gi], _LINE, _SHIFT)
                else:
                    cv2.fillPoly(img, u.uv16[g.vidx], u.detail_colors[gi], _LINE, _SHIFT)
    bbx = mesh.billboards
    if bbx is not None and u.bb_cam is not None:
        cz = u.bb_cam[:, 2]
        fx, fy, cxp, cyp = k4
        for i in np.argsort(-cz):
            if cz[i] < NEAR_M + bbx.radii[i] * 0.2:
                continue
            r = bbx.radii[i]
            uc = fx * u.bb_cam[i, 0] / cz[i] + cxp
            vc = fy * u.bb_cam[i, 1] / cz[i] + cyp
            pts = np.round((np.stack([uc + bbx.shapes[i][:, 0] * fx * r / cz[i],
                                      vc + bbx.shapes[i][:, 1] * fy * r / cz[i]], 1)) * _ONE).astype(np.int32)
            if draw_image:
                cv2.fillPoly(img, [pts], u.bb_colors[i], _LINE, _SHIFT)
            cv2.fillPoly(sem, [pts], int(bbx.class_id), _LINE, _SHIFT)
            cv2.fillPoly(inst, [pts], 0, _LINE, _SHIFT)


def _project_clipped(poly: np.ndarray, k4: tuple[float, float, float, float]) -> np.ndarray:
    """Pinhole projection of near-clipped (k, 3) points (all z >= NEAR_M) to cv2 fixed point."""
    fx, fy, cx, cy = k4
    uv = np.stack([fx * poly[:, 0] / poly[:, 2] + cx, fy * poly[:, 1] / poly[:, 2] + cy], 1)
    return np.round(uv * _ONE).astype(np.int32)


def mesh_details_by_parent(mesh: Mesh) -> dict[int, list[int]]:
    cached = getattr(mesh, "_details_by_parent", None)
    if cached is None:
        cached = {}
        for gi, g in enumerate(mesh.details):
            cached.setdefault(g.parent, []).append(gi)
        mesh._details_by_parent = cached  # type: ignore[attr-defined]
    return cached


def _contact_point(a, u: _Unit, tid: int, r_level: np.ndarray, rot: np.ndarray, c: np.ndarray, k: int
                   ) -> tuple[float, float, float]:
    """Bottom-centre ground contact point in the optical frame: the nearest ground-touching vertices."""
    idx = a.contact_idx[tid]
    local = a.model.mesh.verts if u.local is None else u.local
    p = local[idx].copy()
    p[:, 1] = 0.0
    x, z, heading = a.pose[k]
    world_pts = p @ _rot_y(heading).T + np.array([x, 0.0, z])
    cam_pts = (world_pts - c) @ rot.T
    level_z = (cam_pts @ r_level)[:, 2]  # r_level maps level->optical; its transpose maps back
    near = cam_pts[level_z <= level_z.min() + 0.05]
    m = near.mean(axis=0)
    return (float(m[0]), float(m[1]), float(m[2]))


def _find_events(frames: list[list[ObjectAnnotation]]) -> list[OcclusionEvent]:
    """Runs of frames where a listed object has no visible pixel, bounded by visible frames."""
    n = len(frames)
    per_track: dict[int, dict[int, tuple[int, int]]] = {}
    for k, objs in enumerate(frames):
        for o in objs:
            per_track.setdefault(o.track_id, {})[k] = (o.area_px, o.occluder_track_id)
    events: list[OcclusionEvent] = []
    for tid, seen in per_track.items():
        k = 0
        while k < n:
            if k in seen and seen[k][0] == 0 and (k - 1) in seen and seen[k - 1][0] > 0:
                e = k
                occ: dict[int, int] = {}
                while e in seen and seen[e][0] == 0:
                    occ[seen[e][1]] = occ.get(seen[e][1], 0) + 1
                    e += 1
                if e in seen and seen[e][0] > 0:
                    best = max(sorted(occ), key=lambda t: occ[t])
                    events.append(OcclusionEvent(tid, best, k, e - 1, e - k))
                k = e
            else:
                k += 1
    events.sort(key=lambda ev: (ev.start_frame, ev.track_id))
    return events


def generate_sequence(seed: int, num_frames: int, config: SynthConfig | None = None) -> Iterator[PanopticFrame]:
    """Render frames 0..num_frames-1 of sequence ``seed`` in order."""
    seq = SyntheticSequence(seed, num_frames, config)
    for k in range(num_frames):
        yield seq.render(k)
