"""Turn ray hits into RGB, semantic labels and depth.

Per-pixel maths sticks to +, -, *, /, sqrt, floor and integer hashing (no exp/sin/log), whose
results IEEE 754 fixes exactly - so a render is bit-identical on any machine. Pixels are handled
as flat arrays; a `Surface` serves one texture's pixels to its texture function.
"""

from __future__ import annotations

import numpy as np

from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN
from mtl.data.labels import CLS
from mtl.data.raycast import GROUND_ID, SKY_ID, Hits, Rays, occluded, screen_rects, split_rects
from mtl.data.scene import BOX, CYLINDER, NUM_TEXTURES, SPHERE, T_ASPHALT, Scene
from mtl.data.textures import F32, Surface, apply_texture, hash_noise, lane_markings


def object_normals(scene: Scene, pid: np.ndarray, p: tuple) -> tuple[np.ndarray, ...]:
    """Per-pixel normal components (up where no object was hit): nearest box face, cylinder
    side or cap, sphere."""
    n = [np.zeros(len(pid)), np.ones(len(pid)), np.zeros(len(pid))]
    safe = np.maximum(pid, 0)
    kind = np.where(pid >= 0, scene.kind[safe], -1)
    par = scene.params.T  # (6, N) rows: box lo xyz hi xyz | cyl cx cz r y0 y1 | sphere c r
    box = np.flatnonzero(kind == BOX)
    if box.size:
        ids = pid[box]
        dist = np.stack([np.abs(p[a % 3][box] - par[a][ids]) for a in range(6)])  # (6, k)
        k = dist.argmin(axis=0)
        n[1][box] = 0.0
        for a in range(3):
            n[a][box] = np.where(k == a, -1.0, np.where(k == a + 3, 1.0, 0.0))
    side = np.flatnonzero(kind == CYLINDER)
    if side.size:
        ids = pid[side]
        side, ids = side[np.abs(p[1][side] - par[4][ids]) > 1e-6], ids[np.abs(p[1][side] - par[4][ids]) > 1e-6]
        r = par[2][ids]
        n[0][side], n[1][side], n[2][side] = (p[0][side] - par[0][ids]) / r, 0.0, (p[2][side] - par[1][ids]) / r
    sph = np.flatnonzero(kind == SPHERE)
    if sph.size:
        ids = pid[sph]
        for a in range(3):
            n[a][sph] = (p[a][sph] - par[a][ids]) / par[3][ids]
    return tuple(n)


def _shadow(scene: Scene, rays: Rays, p: tuple, receiver: np.ndarray) -> np.ndarray:
    """(H*W,) 1 where a ground-level, upward-facing point sees the sun, 0 in shadow."""
    h, w = rays.height, rays.width
    sun = scene.lighting.sun
    lit = np.ones(h * w, F32)
    if sun[1] <= 0.05 or len(scene) == 0:
        return lit
    lo, hi = scene.aabb()
    near = lo[:, 2] < scene.camera.position[2] + 120.0  # far shadows are a few hazy pixels
    caster = scene.casts_shadow & (hi[:, 1] > 0.3) & near
    lo, hi = lo[caster], hi[caster]
    # Shadow footprint on the ground: the box swept down along the sun direction.
    off = -hi[:, 1:2] * np.array([[sun[0], sun[2]]]) / sun[1]
    glo = np.stack([np.minimum(lo[:, 0], lo[:, 0] + off[:, 0]), np.zeros(len(lo)),
                    np.minimum(lo[:, 2], lo[:, 2] + off[:, 1])], 1)
    ghi = np.stack([np.maximum(hi[:, 0], hi[:, 0] + off[:, 0]), np.full(len(lo), 0.5),
                    np.maximum(hi[:, 2], hi[:, 2] + off[:, 1])], 1)
    rects = screen_rects(glo, ghi, scene.camera, h, w)
    lit2, rec2 = lit.reshape(h, w), receiver.reshape(h, w)
    big, owner, flat = split_rects(rects, w)
    for i in big:
        r0, r1, c0, c1 = rects[i]
        sl = (slice(r0, r1), slice(c0, c1))
        blocked = occluded(tuple(c.reshape(h, w)[sl] for c in p), sun, lo[i], hi[i]) & rec2[sl]
        lit2[sl][blocked] = 0.0
    keep = receiver[flat]
    owner, flat = owner[keep], flat[keep]
    blocked = occluded(tuple(c[flat] for c in p), sun, lo[owner].T, hi[owner].T)
    lit[flat[blocked]] = 0.0
    return lit


def _sky(scene: Scene, dx, dy, dz) -> np.ndarray:
    lt = scene.lighting
    elev = np.clip(dy / np.sqrt(dx * dx + dy * dy + dz * dz), 0.0, 1.0)[:, None]
    colour = lt.sky_horizon + (lt.sky_zenith - lt.sky_horizon) * np.sqrt(elev)
    up = np.maximum(dy, 1e-3)
    cu, cv = dx / up * 40.0, dz / up * 40.0  # a cloud layer 40 units up
    cloud = hash_noise(cu, cv, 9.0, scene.noise_seed + 11) * 0.6 + hash_noise(cu, cv, 3.0, scene.noise_seed + 12) * 0.4
    amount = np.clip((cloud - (1.0 - lt.clouds)) * 3.0, 0.0, 1.0)[:, None]
    return (colour + (np.array([0.93, 0.93, 0.95]) - colour) * amount).astype(F32)


def _lookup(scene: Scene, pid: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Row of every pixel in the surface table: primitives, then road, terrain, sky."""
    n = len(scene)
    on_road = (px >= scene.road.x0) & (px < scene.road.x1)
    ground = np.where(on_road, n, n + 1)
    return np.where(pid >= 0, pid, np.where(pid == GROUND_ID, ground, n + 2))


def shade(scene: Scene, rays: Rays, hits: Hits, rng: np.random.Generator):
    """Returns rgb (H, W, 3) uint8, label (H, W) uint8, depth (H, W) float32 metres and the surface normals
    (H, W, 3) float32 in the camera frame (x right, y down, z forward; NaN for the sky)."""
    h, w = rays.height, rays.width
    lt = scene.lighting
    t, pid = hits.t.ravel(), hits.pid.ravel()
    d = (rays.dx.ravel(), rays.dy.ravel(), rays.dz.ravel())
    sky = pid == SKY_ID
    tt = np.where(sky, 0.0, t)
    p = tuple(rays.origin[a] + tt * d[a] for a in range(3))
    n = object_normals(scene, pid, p)
    row = _lookup(scene, pid, p[0])
    grounds = (scene.road, scene.terrain, scene.terrain)  # the sky row's entries are overwritten
    colour = np.concatenate([scene.colour, [g.colour for g in grounds]]).astype(F32)[row]  # (N, 3)
    label = np.concatenate([scene.cls, [scene.road.cls, scene.terrain.cls, CLS["sky"]]]).astype(np.uint8)[row]
    texture = np.concatenate([scene.texture, [scene.road.texture, scene.terrain.texture, -1]]).astype(np.int8)[row]
    order = np.argsort(texture, kind="stable")  # group pixels by texture kind once
    bounds = np.searchsorted(texture[order], np.arange(-1, NUM_TEXTURES + 1))
    for kind in range(NUM_TEXTURES):
        idx = order[bounds[kind + 1]:bounds[kind + 2]]
        if idx.size:
            colour[idx] = apply_texture(kind, Surface(scene, p, n, pid, idx), colour[idx], scene.noise_seed)
    road = np.flatnonzero((pid == GROUND_ID) & (texture == T_ASPHALT))
    colour[road[lane_markings(scene, p[0][road], p[2][road])]] = 0.8
    receiver = ~sky & (n[1] > 0.9) & (p[1] < 0.5)
    lit = _shadow(scene, rays, p, receiver)
    sun = lt.sun
    lambert = np.maximum(n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2], 0.0).astype(F32) * lit
    colour *= (lt.ambient + lt.sun_strength * lambert)[:, None]
    seen = np.clip(np.where(sky, DEPTH_MAX, t), DEPTH_MIN, DEPTH_MAX)  # what the haze sees
    haze = (seen / (seen + lt.haze_distance)).astype(F32)[:, None]
    colour += (lt.sky_horizon.astype(F32) - colour) * haze
    colour[sky] = _sky(scene, d[0][sky], d[1][sky], d[2][sky])
    colour = np.sqrt(np.clip(colour * F32(lt.exposure), 0.0, 1.0))  # cheap gamma
    level = np.floor(colour * 255.0 + 0.5).astype(np.int16)
    level += rng.integers(-lt.noise, lt.noise + 1, size=level.shape, dtype=np.int16)  # sensor noise
    rgb = np.clip(level, 0, 255).astype(np.uint8)
    # As in Cityscapes, the sky and anything at or beyond the far plane have no valid depth (NaN; code 0 in
    # the disparity PNG): a 300 m sky mass would dominate the depth statistics and the loss.
    depth = np.where(sky | (t >= DEPTH_MAX), np.nan, seen)
    return (rgb.reshape(h, w, 3), label.reshape(h, w), depth.astype(np.float32).reshape(h, w),
            camera_normals(scene, n, sky).reshape(h, w, 3))


def camera_normals(scene: Scene, n: tuple[np.ndarray, ...], sky: np.ndarray) -> np.ndarray:
    """World-frame normals (3 arrays of (N,)) -> (N, 3) float32 in the camera frame: a world direction is R @ (u, v,
    1), so a normal's camera components are R^T n. The sky has none (NaN)."""
    world = np.stack(n, axis=1)  # (N, 3)
    world /= np.maximum(np.linalg.norm(world, axis=1, keepdims=True), 1e-12)
    cam = (world @ np.asarray(scene.camera.rotation, dtype=np.float64)).astype(np.float32)  # rows: n^T R = (R^T n)^T
    cam[sky] = np.nan
    return cam
