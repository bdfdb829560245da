"""Random driving scenes: a street with lanes, sidewalks, buildings, furniture, traffic and people."""

from __future__ import annotations

import numpy as np

from mtl.data.labels import CLS, IGNORE_INDEX
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
    T_PLAIN,
    T_SIGN,
    T_TERRAIN,
    T_VEHICLE,
    T_WALL,
    Camera,
    GroundBand,
    Lighting,
    Scene,
    SceneBuilder,
    camera_rotation,
)

FACADES = np.array([[0.75, 0.7, 0.6], [0.6, 0.6, 0.6], [0.62, 0.38, 0.3], [0.85, 0.83, 0.78],
                    [0.45, 0.42, 0.4], [0.7, 0.6, 0.45]])
CAR_PAINTS = np.array([[0.85, 0.85, 0.85], [0.1, 0.1, 0.1], [0.5, 0.5, 0.52], [0.55, 0.08, 0.06],
                       [0.1, 0.18, 0.45], [0.75, 0.75, 0.78], [0.2, 0.3, 0.2]])
FOLIAGE = np.array([0.18, 0.32, 0.1])
Z_FAR = 220.0  # buildings beyond this are a few hazy pixels


def _jitter(rng: np.random.Generator, colour, amount: float = 0.08) -> tuple[float, float, float]:
    """Per-instance colour variation (colours are non-negative, so only the top needs clipping)."""
    j = rng.random(3)
    return tuple(min(float(c) * (1.0 + amount * (2.0 * r - 1.0)), 1.0) for c, r in zip(colour, j, strict=False))


class _Street:
    """Lateral layout of one scene, sampled once and shared by the object placers."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.lanes = int(rng.integers(2, 5))
        self.lane_w = rng.uniform(3.0, 3.6)
        self.left, self.right = 0.0, self.lanes * self.lane_w
        self.curb = rng.uniform(0.1, 0.18)
        self.walk = (rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0))
        self.strip = tuple(rng.uniform(1.0, 6.0) if rng.random() < 0.45 else 0.0 for _ in range(2))
        self.ego_lane = int(rng.integers(0, self.lanes))

    def lane_x(self, lane: int) -> float:
        return self.left + (lane + 0.5) * self.lane_w

    def outer(self, side: int) -> float:
        """Lateral coordinate of the outer edge of the sidewalk on side -1 (left) or +1 (right)."""
        return self.left - self.walk[0] if side < 0 else self.right + self.walk[1]

    def building_x(self, side: int) -> float:
        return self.outer(side) + side * self.strip[0 if side < 0 else 1]


def _ground(b: SceneBuilder, s: _Street, rng) -> tuple[GroundBand, GroundBand]:
    road = GroundBand(s.left, s.right, CLS["road"], tuple(_jitter(rng, [0.3, 0.3, 0.31], 0.15)), T_ASPHALT)
    paving = tuple(_jitter(rng, [0.62, 0.6, 0.56], 0.1))
    terrain = tuple(_jitter(rng, [0.35, 0.42, 0.2], 0.2))
    for side, width in ((-1, s.walk[0]), (1, s.walk[1])):
        x_in = s.left if side < 0 else s.right
        b.box((x_in, 0.0, -30.0), (x_in + side * width, s.curb, 600.0), CLS["sidewalk"], paving, T_PAVERS,
              shadow=False)
    return road, GroundBand(-np.inf, np.inf, CLS["terrain"], terrain, T_TERRAIN)


def _buildings(b: SceneBuilder, s: _Street, rng) -> None:
    for side in (-1, 1):
        if rng.random() < 0.12:
            continue
        z, z_end = rng.uniform(-15.0, 0.0), Z_FAR * rng.uniform(0.5, 1.0)
        x0 = s.building_x(side)
        while z < z_end:
            length = rng.uniform(8.0, 30.0)
            if rng.random() > 0.2:
                x = x0 + side * rng.uniform(0.0, 1.5)
                colour = _jitter(rng, FACADES[rng.integers(len(FACADES))])
                b.box((x, 0.0, z), (x + side * rng.uniform(8, 20), rng.uniform(6.0, 35.0), z + length),
                      CLS["building"], colour, T_FACADE)
            elif rng.random() < 0.6:
                _tree(b, x0 + side * rng.uniform(1.0, 4.0), z + length / 2, rng)
            z += length


def _boundary(b: SceneBuilder, s: _Street, rng) -> None:
    """Walls, fences and hedges along the outer edge of the sidewalks; terrain-strip trees."""
    for side in (-1, 1):
        x = s.outer(side) + side * 0.2
        for _ in range(int(rng.integers(0, 3))):
            z0 = rng.uniform(0.0, 80.0)
            z1 = z0 + rng.uniform(5.0, 30.0)
            kind = rng.integers(3)
            if kind == 0:
                b.box((x, 0, z0), (x + side * 0.3, rng.uniform(1.0, 2.5), z1), CLS["wall"],
                      _jitter(rng, [0.6, 0.57, 0.52], 0.2), T_WALL)
            elif kind == 1:
                b.box((x, 0, z0), (x + side * 0.06, rng.uniform(1.0, 2.2), z1), CLS["fence"],
                      _jitter(rng, [0.5, 0.48, 0.45], 0.25), T_FENCE, shadow=False)
            else:
                b.box((x, 0, z0), (x + side * rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.8), z1),
                      CLS["vegetation"], _jitter(rng, FOLIAGE, 0.2), T_FOLIAGE)
        strip = s.strip[0 if side < 0 else 1]
        for _ in range(int(rng.integers(0, 6)) if strip > 0 else 0):
            _tree(b, s.outer(side) + side * rng.uniform(0.5, strip), rng.uniform(3.0, 120.0), rng)


def _tree(b: SceneBuilder, x: float, z: float, rng) -> None:
    trunk = rng.uniform(2.0, 4.0)
    r = rng.uniform(1.5, 3.5)
    b.cylinder(x, z, rng.uniform(0.12, 0.3), 0.0, trunk + r * 0.5, CLS["vegetation"],
               _jitter(rng, [0.3, 0.22, 0.15]), T_PLAIN, shadow=False)  # the canopy's shadow covers it
    b.sphere((x, trunk + r * 0.8, z), r, CLS["vegetation"], _jitter(rng, FOLIAGE, 0.25), T_FOLIAGE)


def _furniture(b: SceneBuilder, s: _Street, rng) -> None:
    """Poles carrying signs or traffic lights at the kerb; bins (ignore class) on the sidewalk."""
    for side in (-1, 1):
        x = (s.left - 0.5) if side < 0 else (s.right + 0.5)
        z = rng.uniform(3.0, 20.0)
        while z < 140.0:
            height = rng.uniform(3.0, 8.0)
            grey = _jitter(rng, [0.45, 0.45, 0.47], 0.2)
            b.cylinder(x, z, rng.uniform(0.06, 0.14), 0.0, height, CLS["pole"], grey)
            carry = rng.random()
            if carry < 0.45:
                y = rng.uniform(2.0, min(height, 3.5) - 0.1)
                colour = [[0.7, 0.08, 0.08], [0.1, 0.25, 0.65], [0.85, 0.7, 0.1]][rng.integers(3)]
                w = rng.uniform(0.5, 0.9)
                b.box((x - w / 2, y - w, z - 0.08), (x + w / 2, y, z - 0.04), CLS["traffic sign"],
                      _jitter(rng, colour), T_SIGN, shadow=False)
            elif carry < 0.85:
                y = rng.uniform(2.6, min(height, 5.0))
                xl = x - side * 0.45
                b.box((xl - 0.18, y - 1.0, z - 0.35), (xl + 0.18, y, z - 0.1), CLS["traffic light"],
                      _jitter(rng, [0.12, 0.12, 0.1]), T_LIGHT, shadow=False)
            z += rng.uniform(12.0, 35.0)
        for _ in range(int(rng.integers(0, 3))):
            xb = s.outer(side) - side * rng.uniform(0.4, 1.0)
            zb = rng.uniform(4.0, 50.0)
            b.box((xb - 0.3, s.curb, zb - 0.3), (xb + 0.3, s.curb + rng.uniform(0.8, 1.2), zb + 0.3),
                  IGNORE_INDEX, _jitter(rng, [0.2, 0.35, 0.25], 0.4), shadow=False)


def _car(b: SceneBuilder, x: float, z: float, rng) -> float:
    w, h, length = rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.65), rng.uniform(3.8, 4.9)
    paint = CAR_PAINTS[rng.integers(len(CAR_PAINTS))] if rng.random() < 0.7 else rng.uniform(0.05, 0.9, 3)
    paint = _jitter(rng, paint, 0.1)
    body = h * rng.uniform(0.5, 0.6)
    b.box((x - w / 2, 0.0, z), (x + w / 2, body, z + length), CLS["car"], paint, T_CAR_BODY)
    c0 = z + length * rng.uniform(0.2, 0.35)
    b.box((x - w / 2 + 0.08, body, c0), (x + w / 2 - 0.08, h, c0 + length * 0.5), CLS["car"], paint,
          T_CABIN)
    return length


def _large_vehicle(b: SceneBuilder, x: float, z: float, cls: int, rng) -> float:
    spec = {CLS["truck"]: (2.4, (2.8, 3.8), (6.0, 10.0)), CLS["bus"]: (2.55, (3.0, 3.4), (10.0, 14.0)),
            CLS["train"]: (2.65, (3.3, 3.9), (25.0, 55.0))}[cls]
    w, h, length = spec[0], rng.uniform(*spec[1]), rng.uniform(*spec[2])
    colour = _jitter(rng, rng.uniform(0.1, 0.9, 3), 0.1)
    if cls == CLS["truck"]:  # cab + cargo box
        b.box((x - w / 2, 0.0, z), (x + w / 2, h * 0.8, z + 2.2), cls, colour, T_VEHICLE)
        b.box((x - w / 2, 0.0, z + 2.4), (x + w / 2, h, z + length), cls, _jitter(rng, [0.8, 0.8, 0.8]), T_PLAIN)
    else:
        b.box((x - w / 2, 0.3 if cls == CLS["train"] else 0.0, z), (x + w / 2, h, z + length), cls, colour,
              T_VEHICLE)
    return length


def _person(b: SceneBuilder, x: float, z: float, y0: float, cls: int, rng, height: float | None = None) -> None:
    height = height or rng.uniform(1.55, 1.9)
    head = rng.uniform(0.1, 0.12)
    shirt = _jitter(rng, rng.uniform(0.1, 0.9, 3), 0.1)
    b.cylinder(x, z, rng.uniform(0.18, 0.26), y0, y0 + height - 2 * head, cls, shirt, T_PERSON)
    b.sphere((x, y0 + height - head, z), head, cls, _jitter(rng, [0.75, 0.55, 0.45], 0.25), shadow=False)


def _two_wheeler(b: SceneBuilder, x: float, z: float, rng) -> float:
    motor = rng.random() < 0.5
    cls = CLS["motorcycle"] if motor else CLS["bicycle"]
    w, h, length = (0.7, 1.1, 2.1) if motor else (0.45, 1.0, 1.75)
    b.box((x - w / 2, 0.0, z), (x + w / 2, h, z + length), cls, _jitter(rng, rng.uniform(0.05, 0.8, 3)),
          T_PLAIN)
    _person(b, x, z + length * 0.45, 0.75, CLS["rider"], rng, height=rng.uniform(0.85, 1.0))
    return length


def _traffic(b: SceneBuilder, s: _Street, rng) -> None:
    tram_lane = int(rng.integers(0, s.lanes)) if rng.random() < 0.3 else -1
    for lane in range(s.lanes):
        x = s.lane_x(lane)
        z = rng.uniform(7.0, 25.0) if lane == s.ego_lane else rng.uniform(-2.0, 20.0)
        if lane == tram_lane and lane != s.ego_lane:
            z += _large_vehicle(b, x, z, CLS["train"], rng) + rng.uniform(5, 30)
        while z < 120.0 and rng.random() < 0.8:
            kind = rng.random()
            jx = x + rng.uniform(-0.4, 0.4)
            if kind < 0.62:
                z += _car(b, jx, z, rng)
            elif kind < 0.74:
                z += _large_vehicle(b, jx, z, CLS["truck"], rng)
            elif kind < 0.86:
                z += _large_vehicle(b, jx, z, CLS["bus"], rng)
            else:
                z += _two_wheeler(b, jx, z, rng)
            z += rng.uniform(3.0, 25.0)


def _people(b: SceneBuilder, s: _Street, rng) -> None:
    for _ in range(int(rng.integers(0, 9))):
        side = -1 if rng.random() < 0.5 else 1
        x_in = s.left if side < 0 else s.right
        x = x_in + side * rng.uniform(0.5, s.walk[0 if side < 0 else 1] - 0.3)
        _person(b, x, rng.uniform(3.0, 60.0), s.curb, CLS["person"], rng)
    if rng.random() < 0.3:
        z = rng.uniform(6.0, 35.0)
        for _ in range(int(rng.integers(1, 4))):
            _person(b, rng.uniform(s.left, s.right), z + rng.uniform(-1, 1), 0.0, CLS["person"], rng)
    if rng.random() < 0.5:  # a rider on the kerb-side lane
        x = s.right - 0.8 if rng.random() < 0.5 else s.left + 0.8
        _two_wheeler(b, x, rng.uniform(5.0, 50.0), rng)


def _lighting(rng) -> Lighting:
    elev = rng.uniform(0.25, 0.95)  # sin of the sun elevation
    az = rng.uniform(-1.0, 1.0, 2)
    horiz = az / max(np.sqrt((az * az).sum()), 1e-6) * np.sqrt(1.0 - elev * elev)
    overcast = rng.random() < 0.25
    sky_h = _jitter(rng, [0.8, 0.84, 0.9] if not overcast else [0.75, 0.76, 0.78], 0.05)
    sky_z = _jitter(rng, [0.32, 0.52, 0.86] if not overcast else [0.6, 0.62, 0.66], 0.1)
    return Lighting(
        sun=np.array([horiz[0], elev, horiz[1]]),
        sun_strength=rng.uniform(0.1, 0.25) if overcast else rng.uniform(0.55, 0.9),
        ambient=rng.uniform(0.55, 0.75) if overcast else rng.uniform(0.25, 0.45),
        sky_horizon=np.array(sky_h), sky_zenith=np.array(sky_z), haze_distance=rng.uniform(150.0, 800.0),
        exposure=rng.uniform(0.85, 1.2), noise=int(rng.integers(1, 6)),
        clouds=rng.uniform(0.6, 1.0) if overcast else rng.uniform(0.0, 0.5),
    )


def sample_scene(rng: np.random.Generator) -> Scene:
    s = _Street(rng)
    b = SceneBuilder()
    road, terrain = _ground(b, s, rng)
    for place in (_buildings, _boundary, _furniture, _traffic, _people):
        place(b, s, rng)
    camera = Camera(
        position=np.array([s.lane_x(s.ego_lane) + rng.uniform(-0.4, 0.4), rng.uniform(1.2, 1.8), 0.0]),
        rotation=camera_rotation(rng.uniform(-4, 4), rng.uniform(-3, 2), rng.uniform(-2, 2)),
        hfov_deg=rng.uniform(60.0, 90.0),
    )
    lanes = [s.left + k * s.lane_w for k in range(1, s.lanes)]
    edges = [s.left + 0.3, s.right - 0.3]
    return b.build(camera, _lighting(rng), road, terrain, lanes, edges, noise_seed=int(rng.integers(2**31)))
