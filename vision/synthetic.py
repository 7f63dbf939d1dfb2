"""Synthetic part images: procedural surfaces with defects and their pixel masks.

No real defect photographs can ship with the project (none exist under a usable licence
offline), so the demo model, the simulated camera and the tests draw their parts from here.
Three surfaces stand for the three industries: brushed metal (stamped parts), woven textile
(looms) and concrete/cement. Five defect types are painted onto them with a mask.

Realism over count: every image gets its own texture scale, orientation, colour, lighting
gradient, optical blur and sensor noise, and defects are painted into the surface *albedo*
before lighting and noise are applied, so a model cannot find a defect from a compositing
seam or a change of noise statistics; it has to see the defect.

Everything is deterministic from the seed. `render(s, None, seed)` and
`render(s, defect, seed)` share the same background, so the two differ only where the defect
was painted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

SURFACES = ("metal", "textile", "concrete")
DEFECTS = ("scratch", "crack", "hole", "stain", "broken_thread")

# Which defects a surface can physically carry: a woven fabric has broken threads but no
# cracks, a metal sheet no threads.
DEFECTS_BY_SURFACE: dict[str, tuple[str, ...]] = {
    "metal": ("scratch", "crack", "hole", "stain"),
    "textile": ("broken_thread", "hole", "stain"),
    "concrete": ("crack", "hole", "stain", "scratch"),
}

# Defects are kept this far (at 256 px) from the image edge: inspection ignores a border band
# of 16 px (border artefacts caused most false alarms in trials), so a defect must show inside.
_EDGE_CLEARANCE = 40

Float = npt.NDArray[np.float32]
Rng = np.random.Generator


@dataclass(frozen=True)
class Sample:
    """One part image: `image` HxWx3 uint8 BGR, `mask` HxW uint8 (255 on the defect)."""

    image: np.ndarray
    mask: np.ndarray
    surface: str
    defect: str | None


def render(
    surface: str, defect: str | None, seed: int, size: tuple[int, int] = (256, 256)
) -> Sample:
    """Render one part image. `size` is (width, height) as in OpenCV.

    Raises ValueError for an unknown surface or defect, a defect the surface cannot carry
    (see DEFECTS_BY_SURFACE) or a size below 64 px.
    """
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}; expected one of {SURFACES}")
    if defect is not None:
        if defect not in DEFECTS:
            raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
        if defect not in DEFECTS_BY_SURFACE[surface]:
            raise ValueError(
                f"a {surface} surface cannot carry {defect!r}; "
                f"expected one of {DEFECTS_BY_SURFACE[surface]}"
            )
    width, height = int(size[0]), int(size[1])
    if width < 64 or height < 64:
        raise ValueError(f"size must be at least 64x64, got {width}x{height}")

    surface_index = SURFACES.index(surface)
    # Separate generators for the background and the defect keep the background identical
    # whether or not a defect is painted (useful for tests and for the reader).
    bg = np.random.default_rng([seed & 0xFFFFFFFFFFFF, surface_index])
    scale = min(width, height) / 256.0 * float(bg.uniform(0.8, 1.25))
    defect_rng = np.random.default_rng(
        [seed & 0xFFFFFFFFFFFF, surface_index, 1 + (DEFECTS.index(defect) if defect else 0)]
    )

    mask = np.zeros((height, width), np.uint8)
    if surface == "textile":
        albedo = _textile(bg, defect_rng, height, width, scale, defect, mask)
    elif surface == "metal":
        albedo = _metal(bg, height, width, scale)
    else:
        albedo = _concrete(bg, height, width, scale)
    if defect is not None and defect != "broken_thread":
        _PAINTERS[defect](defect_rng, albedo, mask, scale, surface)

    image = _camera(bg, albedo, scale)
    return Sample(image=image, mask=mask, surface=surface, defect=defect)


def stream(
    seed: int,
    defect_rate: float = 0.1,
    surfaces: Sequence[str] = SURFACES,
    size: tuple[int, int] = (256, 256),
) -> Iterator[Sample]:
    """An endless, reproducible stream of parts; about `defect_rate` of them defective.

    The surface of each part is drawn uniformly from `surfaces`, the defect uniformly from
    those the surface can carry.
    """
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be within [0, 1], got {defect_rate}")
    surfaces = tuple(surfaces)
    if not surfaces:
        raise ValueError("surfaces must not be empty")
    for s in surfaces:
        if s not in SURFACES:
            raise ValueError(f"unknown surface {s!r}; expected one of {SURFACES}")
    rng = np.random.default_rng(seed)
    while True:
        surface = surfaces[int(rng.integers(len(surfaces)))]
        defect: str | None = None
        if rng.random() < defect_rate:
            choices = DEFECTS_BY_SURFACE[surface]
            defect = choices[int(rng.integers(len(choices)))]
        yield render(surface, defect, int(rng.integers(2**62)), size)


# --- building blocks ---------------------------------------------------------------------------


def _smooth_noise(rng: Rng, h: int, w: int, cell: float) -> Float:
    """Value noise with features about `cell` px across, zero mean, unit-ish spread."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = (
        int(rng.integers(0, max(1, up.shape[0] - h))),
        int(rng.integers(0, max(1, up.shape[1] - w))),
    )
    return np.ascontiguousarray(up[oy : oy + h, ox : ox + w])


def _fractal(rng: Rng, h: int, w: int, cell: float, octaves: int) -> Float:
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * _smooth_noise(rng, h, w, max(cell, 1.5))
        cell /= 2.0
        amp *= 0.55
    return out / np.float32(out.std() + 1e-6)


def _colour(rng: Rng, base: float, tint: float) -> npt.NDArray[np.float32]:
    """A BGR colour near grey level `base`, tinted by at most `tint` per channel."""
    return (base * (1.0 + rng.uniform(-tint, tint, 3))).astype(np.float32)


def _camera(rng: Rng, albedo: Float, scale: float) -> np.ndarray:
    """Light the surface and photograph it: gradient + hotspot, optics blur, sensor noise."""
    h, w = albedo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    cy, cx = rng.uniform(-0.2, 1.2, 2)
    spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(0.15, 0.5) ** 2))
    light = (
        rng.uniform(0.75, 1.15)
        + rng.uniform(0.05, 0.35) * gradient
        + rng.uniform(0.0, 0.3) * spot
        + 0.03 * _smooth_noise(rng, h, w, 64 * scale)
    ).astype(np.float32)
    img = albedo * light[:, :, None]
    sigma = rng.uniform(0.3, 0.9) * max(scale, 0.5)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    # Shot noise grows with brightness, read noise does not.
    noise_sd = rng.uniform(0.004, 0.012) + rng.uniform(0.005, 0.02) * np.sqrt(np.clip(img, 0, 1))
    img = img + noise_sd * rng.standard_normal(img.shape).astype(np.float32)
    out: np.ndarray = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# --- surfaces (albedo, float32 BGR, roughly in [0, 1]) ------------------------------------------


def _metal(rng: Rng, h: int, w: int, scale: float) -> Float:
    """Brushed steel: fine streaks along one direction, grain, slow waviness from the roll."""
    side = math.ceil(math.hypot(h, w)) + 4
    streak_len = rng.uniform(12, 60) * scale
    streaks = cv2.resize(
        rng.standard_normal((side, max(2, int(side / streak_len)))).astype(np.float32),
        (side, side),
        interpolation=cv2.INTER_LINEAR,
    )
    coarse = cv2.resize(
        rng.standard_normal((max(2, int(side / (2.5 * scale))), max(2, int(side / 150)))).astype(
            np.float32
        ),
        (side, side),
        interpolation=cv2.INTER_CUBIC,
    )
    field = 0.7 * streaks + 0.5 * coarse
    centre = (side / 2.0, side / 2.0)
    rot = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1.0)
    rot[:, 2] -= np.array([(side - w) / 2.0, (side - h) / 2.0])
    field = cv2.warpAffine(field, rot, (w, h), flags=cv2.INTER_LINEAR)
    grain = rng.standard_normal((h, w)).astype(np.float32)
    wave = _smooth_noise(rng, h, w, 90 * scale)
    level = (
        rng.uniform(0.45, 0.7)
        + rng.uniform(0.02, 0.05) * field
        + 0.015 * grain
        + rng.uniform(0.01, 0.04) * wave
    )
    colour = _colour(rng, 1.0, 0.04)
    return np.ascontiguousarray(level[:, :, None] * colour[None, None, :], np.float32)


def _concrete(rng: Rng, h: int, w: int, scale: float) -> Float:
    """Cement/concrete: fractal mottling, sand grain, aggregate flecks and small pores."""
    mottle = _fractal(rng, h, w, rng.uniform(30, 80) * scale, 4)
    sand = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7 * scale)
    level: np.ndarray = rng.uniform(0.5, 0.68) + rng.uniform(0.03, 0.06) * mottle + 0.06 * sand
    flecks = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(60, 160) * (h * w) / 65536 / max(scale, 0.5) ** 2)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (
            max(1, int(rng.uniform(1.0, 3.5) * scale)),
            max(1, int(rng.uniform(1.0, 3.0) * scale)),
        )
        cv2.ellipse(
            flecks, c, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(-1, 1)), -1
        )
    flecks = cv2.GaussianBlur(flecks, (0, 0), 0.8).astype(np.float32)
    level = level + 0.06 * flecks
    # Pores (bug holes) are normal in cast concrete and much smaller than a defect hole.
    pores = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(10, 50) * (h * w) / 65536 / max(scale, 0.5) ** 2)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(pores, c, max(1, int(rng.uniform(0.6, 1.6) * scale)), 1.0, -1, cv2.LINE_AA)
    pores = cv2.GaussianBlur(pores, (0, 0), 0.6).astype(np.float32)
    level = level * (1.0 - rng.uniform(0.25, 0.45) * np.clip(pores, 0, 1))
    colour = _colour(rng, 1.0, 0.05)
    colour[2] += np.float32(rng.uniform(0.0, 0.06))  # cement is a little warm
    return np.ascontiguousarray(level[:, :, None] * colour[None, None, :], np.float32)


def _textile(
    rng: Rng,
    defect_rng: Rng,
    h: int,
    w: int,
    scale: float,
    defect: str | None,
    mask: npt.NDArray[np.uint8],
) -> Float:
    """Plain weave: warp and weft alternate over/under; per-thread tension and colour jitter.

    A broken thread is part of the weave itself (a warp thread missing over a stretch), so it
    is rendered here rather than painted on.
    """
    period = rng.uniform(6.0, 11.0) * scale
    angle = math.radians(rng.uniform(-8, 8))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Fabric is never perfectly straight: a smooth displacement bends the threads.
    bend = rng.uniform(0.5, 2.0) * scale
    xx = xx + bend * _smooth_noise(rng, h, w, 70 * scale)
    yy = yy + bend * _smooth_noise(rng, h, w, 70 * scale)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    u0, v0 = rng.uniform(0, period, 2)
    uu, vv = (u + u0) / period, (v + v0) / period
    i, j = np.floor(uu).astype(np.int64), np.floor(vv).astype(np.int64)
    fu, fv = uu - i, vv - j
    n_threads = int(max(h, w) * 1.6 / period) + 8
    imin, jmin = int(i.min()), int(j.min())
    warp_gain = rng.uniform(0.88, 1.1, n_threads).astype(np.float32)
    weft_gain = rng.uniform(0.88, 1.1, n_threads).astype(np.float32)
    fill = rng.uniform(0.75, 0.95)  # how much of the period a yarn covers
    # Yarn cross-section: bright centre, dark flanks; zero in the gap between yarns.
    warp_prof = np.clip(np.sin(np.pi * np.clip((fu - (1 - fill) / 2) / fill, 0, 1)), 0, 1) ** 0.6
    weft_prof = np.clip(np.sin(np.pi * np.clip((fv - (1 - fill) / 2) / fill, 0, 1)), 0, 1) ** 0.6
    warp_on_top = ((i + j) % 2) == 0

    missing = np.zeros((h, w), bool)
    if defect == "broken_thread":
        # Pick a warp thread crossing the inner part of the image and remove it over a stretch.
        margin = _EDGE_CLEARANCE * scale
        cy, cx = (
            defect_rng.uniform(margin, h - margin),
            defect_rng.uniform(margin, w - margin),
        )
        ci = int(np.floor(((cx * math.cos(angle) + cy * math.sin(angle)) + u0) / period))
        cv_ = (-cx * math.sin(angle) + cy * math.cos(angle)) + v0
        half = defect_rng.uniform(15, 70) * scale
        along = v + v0
        missing = (i == ci) & (np.abs(along - cv_) < half)
        if defect_rng.random() < 0.4:  # sometimes two neighbouring threads go
            missing |= (i == ci + 1) & (np.abs(along - cv_) < half * defect_rng.uniform(0.4, 1))
        mask[missing] = 255

    warp_col = _colour(rng, rng.uniform(0.35, 0.8), 0.25)
    weft_col = warp_col * _colour(rng, 1.0, 0.08)
    wg = warp_gain[np.clip(i - imin, 0, n_threads - 1)]
    fg = weft_gain[np.clip(j - jmin, 0, n_threads - 1)]
    # A yarn dips where it passes under its neighbour; shade it along its length.
    warp_val = wg * warp_prof * (0.8 + 0.2 * np.sin(np.pi * fv))
    weft_val = fg * weft_prof * (0.8 + 0.2 * np.sin(np.pi * fu))
    warp_vis = np.where(warp_on_top, warp_val, warp_val * (weft_prof < 0.15))
    weft_vis = np.where(warp_on_top, weft_val * (warp_prof < 0.15), weft_val)
    if missing.any():
        # Without its warp the weft lies loose and flat; the gap behind shows through.
        warp_vis = np.where(missing, 0.0, warp_vis)
        weft_vis = np.where(missing, weft_val * 0.9, weft_vis)
    gap = 0.12
    warp_w = warp_vis.astype(np.float32)[:, :, None]
    weft_w = weft_vis.astype(np.float32)[:, :, None]
    albedo = (
        gap * warp_col[None, None, :]
        + warp_w * (warp_col - gap * warp_col)[None, None, :]
        + weft_w * (weft_col - gap * weft_col)[None, None, :] * (1 - warp_w)
    )
    # Hairiness: fine fibres sticking out of the yarn.
    hair = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.6)
    albedo = albedo * (1.0 + 0.06 * hair)[:, :, None]
    return np.ascontiguousarray(albedo, np.float32)


# --- defects (paint into the albedo in place, mark the mask) -----------------------------------


def _centre(rng: Rng, h: int, w: int, scale: float) -> tuple[float, float]:
    m = _EDGE_CLEARANCE * scale
    return float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m))


def _blend_layer(albedo: Float, alpha: Float, target: Float | npt.NDArray[np.float32]) -> None:
    a = alpha[:, :, None]
    albedo *= 1.0 - a
    albedo += a * target


def _mark(mask: npt.NDArray[np.uint8], alpha: Float, level: float) -> None:
    mask[alpha > level] = 255


_SHIFT = 4  # cv2 fixed-point sub-pixel bits: smooth, anti-aliased strokes
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def _scratch(rng: Rng, albedo: Float, mask: npt.NDArray[np.uint8], scale: float, _s: str) -> None:
    """A tool or handling scratch: a thin, slightly curved line, brighter or darker."""
    h, w = albedo.shape[:2]
    cx, cy = _centre(rng, h, w, scale)
    length = rng.uniform(30, 140) * scale
    theta = rng.uniform(0, math.pi)
    bow = rng.uniform(-0.25, 0.25) * length
    n = 24
    t = np.linspace(-0.5, 0.5, n)
    px = cx + t * length * math.cos(theta) - bow * (1 - 4 * t**2) * math.sin(theta)
    py = cy + t * length * math.sin(theta) + bow * (1 - 4 * t**2) * math.cos(theta)
    pts = np.array([_pt(x, y) for x, y in zip(px, py, strict=True)], np.int32)
    layer = np.zeros((h, w), np.uint8)
    thickness = max(1, round(rng.uniform(1, 3) * scale))
    cv2.polylines(layer, [pts], False, 255, thickness, cv2.LINE_AA, _SHIFT)
    alpha = layer.astype(np.float32) / 255.0
    # Depth fades along the stroke; a scratch is rarely uniform.
    fade = 0.6 + 0.4 * _smooth_noise(rng, h, w, 20 * scale)
    alpha *= np.clip(fade, 0.3, 1.0)
    delta = rng.uniform(0.15, 0.35) * (1 if rng.random() < 0.6 else -1)
    target = np.clip(albedo + np.float32(delta), 0, 1.2)
    _blend_layer(albedo, alpha, target)
    _mark(mask, alpha, 0.25)


def _crack(rng: Rng, albedo: Float, mask: npt.NDArray[np.uint8], scale: float, _s: str) -> None:
    """A fatigue or shrinkage crack: a jagged, branching dark line that tapers."""
    h, w = albedo.shape[:2]
    layer = np.zeros((h, w), np.uint8)
    x, y = _centre(rng, h, w, scale)
    theta = rng.uniform(0, 2 * math.pi)
    width = rng.uniform(1.5, 3.5) * scale
    steps = int(rng.uniform(15, 50))
    stack: list[tuple[float, float, float, float, int]] = [(x, y, theta, width, steps)]
    m = 8.0
    while stack:
        x, y, theta, width, steps = stack.pop()
        for k in range(steps):
            theta += rng.normal(0, 0.35)
            step = rng.uniform(2.0, 4.0) * scale
            nx, ny = x + step * math.cos(theta), y + step * math.sin(theta)
            if not (m < nx < w - m and m < ny < h - m):
                break
            thick = max(1, round(width * (1 - 0.7 * k / max(steps, 1))))
            cv2.line(layer, _pt(x, y), _pt(nx, ny), 255, thick, cv2.LINE_AA, _SHIFT)
            x, y = nx, ny
            if rng.random() < 0.06 and len(stack) < 4:
                stack.append(
                    (
                        x,
                        y,
                        theta + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1),
                        width * 0.6,
                        int(steps * rng.uniform(0.3, 0.6)),
                    )
                )
    alpha = layer.astype(np.float32) / 255.0
    darkening = rng.uniform(0.4, 0.75)
    _blend_layer(albedo, alpha, albedo * np.float32(1 - darkening))
    _mark(mask, alpha, 0.25)


def _hole(rng: Rng, albedo: Float, mask: npt.NDArray[np.uint8], scale: float, surface: str) -> None:
    """A pit, blow-hole or hole: a dark cavity, shadowed on one side, with a lit rim."""
    h, w = albedo.shape[:2]
    cx, cy = _centre(rng, h, w, scale)
    rx = rng.uniform(3, 12) * scale
    ry = rx * rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, 180)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2)
    # A ragged edge: holes in fabric fray, pits in metal and concrete are irregular.
    ragged = 0.15 if surface == "textile" else 0.08
    r = r * (1 + ragged * _smooth_noise(rng, h, w, 3 * scale))
    inside = np.clip((1.0 - r) * max(rx, 2) / 1.2 + 0.5, 0, 1).astype(np.float32)
    light_dir = rng.uniform(0, 2 * math.pi)
    shade = (dx * math.cos(light_dir) + dy * math.sin(light_dir)) / (rx + 1e-6)
    depth = rng.uniform(0.1, 0.35)
    cavity = albedo * np.clip(depth + 0.15 * shade, 0.03, 1)[:, :, None].astype(np.float32)
    if surface == "textile":
        # Through the hole one sees whatever is behind the fabric: dark, without weave.
        cavity = np.full_like(albedo, rng.uniform(0.03, 0.15))
    _blend_layer(albedo, inside, cavity)
    if surface != "textile":
        rim = np.clip(1 - np.abs(r - 1.15) / 0.2, 0, 1) * np.clip(-shade, 0, 1)
        albedo *= (1.0 + rng.uniform(0.15, 0.4) * rim)[:, :, None].astype(np.float32)
    _mark(mask, inside, 0.5)


def _stain(
    rng: Rng, albedo: Float, mask: npt.NDArray[np.uint8], scale: float, surface: str
) -> None:
    """Oil, rust or water: a soft irregular blob that darkens or discolours the surface."""
    h, w = albedo.shape[:2]
    radius = rng.uniform(10, 35) * scale
    # A large stain needs more room to stay clear of the ignored border band.
    m = max(_EDGE_CLEARANCE * scale, 16 + 1.5 * radius)
    cx, cy = float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius
    edge = 1.0 + 0.35 * _smooth_noise(rng, h, w, radius * 0.6)
    core = np.clip((edge - d) * 3.0, 0, 1).astype(np.float32)
    alpha = cv2.GaussianBlur(core, (0, 0), max(1.0, radius * rng.uniform(0.05, 0.2)))
    kind = rng.integers(3)
    if kind == 0:  # oil / water: darker, colour kept
        tint = np.full(3, 1 - rng.uniform(0.25, 0.5), np.float32)
    elif kind == 1:  # rust / coffee: brown (BGR: less blue and green)
        tint = np.array(
            [rng.uniform(0.35, 0.6), rng.uniform(0.55, 0.75), rng.uniform(0.85, 1.0)], np.float32
        )
    else:  # chemical / dye: some other hue
        tint = rng.uniform(0.45, 1.0, 3).astype(np.float32)
        tint[int(rng.integers(3))] = np.float32(rng.uniform(0.35, 0.55))
    _blend_layer(albedo, alpha, albedo * tint[None, None, :])
    _mark(mask, alpha, 0.5)


_PAINTERS = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain}
