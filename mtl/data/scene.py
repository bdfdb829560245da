"""Scene description for the ray-cast driving-scene generator.

World frame: X to the right of the road, Y up, Z along the road (metres). A scene is an
infinite ground plane (a road strip, terrain elsewhere) plus a list of
primitives - axis-aligned boxes, vertical cylinders and spheres - each carrying a class id,
a base colour and a texture kind. `sample_scene` (in `scene_sampler.py`) fills one at random;
tests build scenes by hand with `SceneBuilder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Primitive kinds.
BOX, CYLINDER, SPHERE = 0, 1, 2

# Texture kinds: how the shader modulates a surface's base colour.
(
    T_PLAIN, T_ASPHALT, T_PAVERS, T_TERRAIN, T_FACADE, T_VEHICLE, T_FOLIAGE, T_FENCE,
    T_WALL, T_PERSON, T_LIGHT, T_SIGN, T_CAR_BODY, T_CABIN,
) = range(14)
NUM_TEXTURES = 14


@dataclass
class Camera:
    """Pinhole camera. `rotation` maps camera axes (x right, y down, z forward) to world."""

    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3)
    hfov_deg: float

    def focal(self, width: int) -> float:
        return width / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)


@dataclass
class Lighting:
    sun: np.ndarray  # (3,) unit vector towards the sun
    sun_strength: float = 0.8
    ambient: float = 0.4
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([0.82, 0.86, 0.92]))
    sky_zenith: np.ndarray = field(default_factory=lambda: np.array([0.35, 0.55, 0.88]))
    haze_distance: float = 400.0
    exposure: float = 1.0
    noise: int = 3  # sensor noise amplitude in 8-bit levels
    clouds: float = 0.3  # cloud cover 0..1


@dataclass
class GroundBand:
    """A lateral strip of the ground plane: x in [x0, x1) has this class and texture."""

    x0: float
    x1: float
    cls: int
    colour: tuple[float, float, float]
    texture: int


@dataclass
class Scene:
    camera: Camera
    lighting: Lighting
    kind: np.ndarray  # (N,) int8
    params: np.ndarray  # (N, 6) box: lo, hi | cylinder: cx, cz, r, y0, y1 | sphere: c, r
    cls: np.ndarray  # (N,) uint8 train id (255 = ignore)
    colour: np.ndarray  # (N, 3) float linear albedo
    texture: np.ndarray  # (N,) int8
    casts_shadow: np.ndarray  # (N,) bool
    road: GroundBand  # the road strip of the ground plane
    terrain: GroundBand  # the rest of the ground plane (under sidewalks, beyond them)
    lane_lines: np.ndarray  # x of dashed lane markings
    edge_lines: np.ndarray  # x of solid edge markings
    noise_seed: int = 0

    def __len__(self) -> int:
        return len(self.kind)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of every primitive: two (N, 3) arrays."""
        p = self.params
        lo = np.empty((len(p), 3))
        hi = np.empty((len(p), 3))
        box, cyl, sph = self.kind == BOX, self.kind == CYLINDER, self.kind == SPHERE
        lo[box], hi[box] = p[box, :3], p[box, 3:]
        c = p[cyl]
        lo[cyl] = np.stack([c[:, 0] - c[:, 2], c[:, 3], c[:, 1] - c[:, 2]], axis=1)
        hi[cyl] = np.stack([c[:, 0] + c[:, 2], c[:, 4], c[:, 1] + c[:, 2]], axis=1)
        s = p[sph]
        lo[sph] = s[:, :3] - s[:, 3:4]
        hi[sph] = s[:, :3] + s[:, 3:4]
        return lo, hi


class SceneBuilder:
    """Accumulates primitives, then freezes them into a `Scene`."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, tuple[float, ...], int, tuple[float, ...], int, bool]] = []

    def box(self, lo, hi, cls: int, colour, texture: int = T_PLAIN, shadow: bool = True) -> None:
        lo, hi = tuple(map(min, lo, hi)), tuple(map(max, lo, hi))
        self._rows.append((BOX, (*lo, *hi), cls, tuple(colour), texture, shadow))

    def cylinder(self, cx: float, cz: float, r: float, y0: float, y1: float, cls: int, colour,
                 texture: int = T_PLAIN, shadow: bool = True) -> None:
        self._rows.append((CYLINDER, (cx, cz, r, y0, y1, 0.0), cls, tuple(colour), texture, shadow))

    def sphere(self, centre, r: float, cls: int, colour, texture: int = T_PLAIN,
               shadow: bool = True) -> None:
        self._rows.append((SPHERE, (*centre, r, 0.0, 0.0), cls, tuple(colour), texture, shadow))

    def build(self, camera: Camera, lighting: Lighting, road: GroundBand, terrain: GroundBand,
              lane_lines=(), edge_lines=(), noise_seed: int = 0) -> Scene:
        rows = self._rows
        return Scene(
            camera=camera,
            lighting=lighting,
            kind=np.array([r[0] for r in rows], dtype=np.int8),
            params=np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 6),
            cls=np.array([r[2] for r in rows], dtype=np.uint8),
            colour=np.array([r[3] for r in rows], dtype=np.float64).reshape(-1, 3),
            texture=np.array([r[4] for r in rows], dtype=np.int8),
            casts_shadow=np.array([r[5] for r in rows], dtype=bool),
            road=road,
            terrain=terrain,
            lane_lines=np.asarray(lane_lines, dtype=np.float64),
            edge_lines=np.asarray(edge_lines, dtype=np.float64),
            noise_seed=noise_seed,
        )


def camera_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Camera->world rotation: yaw about +Y, pitch (positive looks up), roll about the view axis."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, 1.0])  # camera y points down, world Y up
    return yaw @ pitch @ roll @ flip
