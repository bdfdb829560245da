"""Depth <-> the 8-bit quantised disparity PNG encoding Miniscapes uses.

0 is invalid; values 1..255 are linear in disparity from 1/300 to 1/4 m^-1, so the
quantisation step is fine near the camera and coarse far away (as in the course data).
"""

from __future__ import annotations

import numpy as np

DEPTH_MIN = 4.0
DEPTH_MAX = 300.0
_DISP_MIN = 1.0 / DEPTH_MAX
_DISP_MAX = 1.0 / DEPTH_MIN


def depth_to_disparity8(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint8 disparity code; NaN / non-positive depth -> 0 (invalid)."""
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    disp = 1.0 / np.clip(np.where(valid, depth, DEPTH_MAX), DEPTH_MIN, DEPTH_MAX)
    code = 1.0 + np.round((disp - _DISP_MIN) / (_DISP_MAX - _DISP_MIN) * 254.0)
    return np.where(valid, code, 0).astype(np.uint8)


def disparity8_to_depth(code: np.ndarray) -> np.ndarray:
    """uint8 disparity code -> float32 metres, NaN where the code is 0."""
    code = np.asarray(code).astype(np.float64)
    disp = _DISP_MIN + (code - 1.0) / 254.0 * (_DISP_MAX - _DISP_MIN)
    with np.errstate(divide="ignore"):
        depth = np.where(code > 0, 1.0 / disp, np.nan)
    return depth.astype(np.float32)


def depth_to_png16_cm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 centimetres (0 = invalid); used for exported predictions."""
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, np.round(np.clip(depth, 0, 655.35) * 100.0), 0).astype(np.uint16)
