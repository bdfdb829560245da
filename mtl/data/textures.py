"""Procedural surface textures: colour modulation from hit positions, normals and face coordinates.

Like the rest of the renderer, only IEEE-exact arithmetic and integer hashing, so textures are
bit-identical on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from mtl.data.scene import (
    T_ASPHALT,
    T_CABIN,
    T_CAR_BODY,
    T_FACADE,
    T_FENCE,
    T_FOLIAGE,
    T_LIGHT,
    T_PAVERS,
    T_PERSON,
    T_SIGN,
    T_TERRAIN,
    T_VEHICLE,
    T_WALL,
    Scene,
)

F32 = np.float32


def hash_noise(a: np.ndarray, b: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Blocky value noise in [0, 1): one hashed value per (scale x scale) cell of (a, b)."""
    ia = np.floor(a * (1.0 / scale)).astype(np.int64).astype(np.uint32)
    ib = np.floor(b * (1.0 / scale)).astype(np.int64).astype(np.uint32)
    h = (ia * np.uint32(73856093)) ^ (ib * np.uint32(19349663)) ^ np.uint32(seed & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h = h ^ (h >> np.uint32(16))
    return (h & np.uint32(0xFFFF)).astype(F32) * F32(1.0 / 65536.0)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


class Surface:
    """Hit points of a group of pixels; attributes are gathered on first use only."""

    def __init__(self, scene: Scene, p: tuple, n: tuple, pid: np.ndarray, idx: np.ndarray) -> None:
        self._scene, self._p, self._n, self._pid, self.idx = scene, p, n, pid, idx

    @cached_property
    def x(self) -> np.ndarray:
        return self._p[0][self.idx]

    @cached_property
    def y(self) -> np.ndarray:
        return self._p[1][self.idx]

    @cached_property
    def z(self) -> np.ndarray:
        return self._p[2][self.idx]

    @cached_property
    def n(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[self.idx] for c in self._n)

    @cached_property
    def u(self) -> np.ndarray:  # along the face
        return np.where(np.abs(self.n[0]) > 0.5, self.z, self.x)

    @cached_property
    def v(self) -> np.ndarray:  # height, or z on horizontal faces
        return np.where(np.abs(self.n[1]) > 0.5, self.z, self.y)

    @cached_property
    def pid(self) -> np.ndarray:
        return self._pid[self.idx]

    @cached_property
    def params(self) -> np.ndarray:  # (k, 6) of the primitive each pixel hit
        return self._scene.params[self.pid]


def lane_markings(scene: Scene, x, z) -> np.ndarray:
    paint = np.zeros(x.shape, dtype=bool)
    for xl in scene.lane_lines:
        paint |= (np.abs(x - xl) < 0.07) & (_frac(z / 9.0) < 0.4)
    for xe in scene.edge_lines:
        paint |= np.abs(x - xe) < 0.08
    return paint


def _asphalt(s: Surface, a, seed):
    return a * (0.85 + 0.3 * hash_noise(s.x, s.z, 0.15, seed))[:, None]


def _terrain(s: Surface, a, seed):
    n = 0.7 + 0.3 * hash_noise(s.x, s.z, 0.3, seed + 1) + 0.2 * hash_noise(s.x, s.z, 1.7, seed + 2)
    return a * n[:, None]


def _foliage(s: Surface, a, seed):
    n = 0.55 + 0.45 * hash_noise(s.u + s.x, s.v, 0.25, seed + 3) + 0.2 * hash_noise(s.u, s.v + s.z, 0.9, seed + 4)
    return a * n[:, None]


def _pavers(s: Surface, a, seed):
    joint = (_frac(s.u / 0.6) < 0.07) | (_frac(s.v / 0.6) < 0.07)
    return a * np.where(joint, F32(0.7), 0.95 + 0.1 * hash_noise(s.u, s.v, 0.6, seed + 5))[:, None]


def _facade(s: Surface, a, seed):
    u, v = s.u, s.v
    fu, fv = _frac(u / 3.1), _frac(v / 3.3)
    window = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.78) & (v > 2.6) & (np.abs(s.n[1]) < 0.5)
    glass = np.array([0.12, 0.16, 0.22], F32) * (0.6 + 0.8 * hash_noise(u, v, 3.1, seed + 6))[:, None]
    return np.where(window[:, None], glass, a * (0.9 + 0.2 * hash_noise(u, v, 0.5, seed + 7))[:, None])


def _height_fraction(s: Surface) -> np.ndarray:
    """Height of the hit within its box, 0 at the bottom face, 1 at the top."""
    return (s.y - s.params[:, 1]) / np.maximum(s.params[:, 4] - s.params[:, 1], 1e-6)


def _vehicle(s: Surface, a, seed):  # a window band and dark tyres on the sides
    rel, side = _height_fraction(s), np.abs(s.n[1]) < 0.5
    out = np.where((side & (rel > 0.45) & (rel < 0.92))[:, None], np.array([0.08, 0.1, 0.13], F32), a)
    return np.where((side & (rel < 0.22))[:, None], F32(0.04), out)


def _car_body(s: Surface, a, seed):
    return np.where(((np.abs(s.n[1]) < 0.5) & (_height_fraction(s) < 0.4))[:, None], F32(0.04), a)


def _cabin(s: Surface, a, seed):
    glass = (np.abs(s.n[1]) < 0.5) & (_height_fraction(s) > 0.08)
    return np.where(glass[:, None], np.array([0.07, 0.09, 0.12], F32), a)


def _fence(s: Surface, a, seed):
    bar = (_frac(s.u / 0.18) < 0.3) | (_frac(s.v / 0.5) < 0.12)
    return np.where(bar[:, None], a, a * 0.35)


def _wall(s: Surface, a, seed):
    u, v = s.u, s.v
    mortar = (_frac(v / 0.25) < 0.1) | (_frac(u / 0.5 + 0.5 * np.floor(v / 0.25)) < 0.05)
    return a * np.where(mortar, F32(0.75), 0.9 + 0.2 * hash_noise(u, v, 0.5, seed + 8))[:, None]


def _person(s: Surface, a, seed):  # shirt = base colour, trousers a per-person dark tone
    legs = (s.y - s.params[:, 3]) < 0.45 * (s.params[:, 4] - s.params[:, 3])
    trousers = 0.1 + 0.3 * hash_noise(s.pid, s.pid, 1.0, seed + 9)[:, None] * np.array([1, 1, 1.4], F32)
    return np.where(legs[:, None], trousers, a)


def _light(s: Surface, a, seed):
    fu, fv = _frac(s.u / 0.3), _frac(s.v / 0.32)
    lamp = (s.n[2] < -0.5) & (fu > 0.3) & (fu < 0.7) & (fv > 0.2) & (fv < 0.8)
    return np.where(lamp[:, None], np.array([0.95, 0.85, 0.2], F32), a)


def _sign(s: Surface, a, seed):
    front = s.n[2] < -0.5
    border = front & ((_frac(s.u / 0.7) < 0.1) | (_frac(s.u / 0.7) > 0.9))
    return np.where(border[:, None], F32(0.9), np.where(front[:, None], a, F32(0.5)))


TEXTURES: dict[int, Callable[[Surface, np.ndarray, int], np.ndarray]] = {
    T_ASPHALT: _asphalt, T_TERRAIN: _terrain, T_FOLIAGE: _foliage, T_PAVERS: _pavers, T_FACADE: _facade,
    T_VEHICLE: _vehicle, T_CAR_BODY: _car_body, T_CABIN: _cabin, T_FENCE: _fence, T_WALL: _wall,
    T_PERSON: _person, T_LIGHT: _light, T_SIGN: _sign,
}


def apply_texture(kind: int, s: Surface, a: np.ndarray, seed: int) -> np.ndarray:
    """Modulate base colours `a` (k, 3) of the surfaces `s` with texture `kind` (plain: unchanged)."""
    fn = TEXTURES.get(kind)
    return a if fn is None else fn(s, a, seed)
