"""Draw one SynthCXR radiograph and one mask per finding instance, vectorised in numpy.

Everything is drawn in *body coordinates* (X to the image right = patient's left, Y down,
chest centre at the origin, thorax about ±0.45 wide), then the patient's pose (shift,
size, rotation) maps them to pixels, so findings land at anatomical places whatever the
pose. The image is a density map (air dark, soft tissue grey, bone and metal bright)
turned into grey levels with a random exposure, contrast, gamma, blur and noise.

Difficulty knobs (``SynthConfig``): ``contrast`` scales every finding's density change,
``finding_size`` the extent of the diffuse and pleural findings and the heart's growth,
``location_spread`` where in its lobe a focal finding may sit, ``pose_jitter`` the pose
ranges. At their defaults no value is touched, so version 1's images come out bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kgvlp.config.schema import SynthConfig
from kgvlp.data.synth.findings import Instance

CM = 0.027  # body units per centimetre (thorax ≈ 30 cm ≈ 0.8 units)


@dataclass
class Anatomy:
    """Body-coordinate grids and the masks findings are placed against."""
    X: np.ndarray
    Y: np.ndarray
    pixel: float                   # body units per pixel
    lungs: dict                    # side -> dict(mask, xc, a, apex, base) (mask excludes heart)
    heart: np.ndarray
    heart_params: tuple
    knobs: SynthConfig


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish, (size, size), with ``cells`` blobs across."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return ndimage.zoom(coarse, size / cells, order=1, mode="nearest", grid_mode=True)[:size, :size]


def _segment_distance(X, Y, points) -> np.ndarray:
    """Distance from every pixel to a polyline given as [(x, y), ...] in body units."""
    dist = np.full(X.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((X - x0) * dx + (Y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(X - x0 - t * dx, Y - y0 - t * dy))
    return dist


def _lung(X, Y, side: int, width: float, height: float, drop: float):
    xc, yc = side * 0.195, -0.04
    b = 0.33 * height
    apex, base = yc - b, yc + 0.78 * b + drop
    a = 0.16 * width * (0.72 + 0.38 * np.clip((Y - apex) / (2 * b), 0, 1))
    ellipse = ((X - xc) / a) ** 2 + ((Y - yc) / b) ** 2 < 1
    dome = base - 0.07 * np.clip(1 - ((X - xc + side * 0.03) / (0.16 * width)) ** 2, 0, 1)
    return ellipse & (Y < dome), ellipse, dict(xc=xc, a=0.16 * width, apex=apex, base=base, yc=yc, b=b)


def build_anatomy(rng, size: int, cardiomegaly: str | None,
                  knobs: SynthConfig | None = None) -> tuple[Anatomy, np.ndarray]:
    """Pose the patient and draw normal anatomy; returns the anatomy and its density map."""
    knobs = knobs or SynthConfig()
    jitter = knobs.pose_jitter
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    cx, cy = 0.5 + rng.normal(0, 0.02 * jitter), 0.53 + rng.normal(0, 0.02 * jitter)
    scale = rng.uniform(0.86, 1.04)
    if jitter != 1.0:  # the size range shrinks/grows around its middle, 0.95
        scale = 0.95 + (scale - 0.95) * jitter
    theta = float(np.clip(rng.normal(0, 0.04 * jitter), -0.09 * jitter, 0.09 * jitter))
    c, s = np.cos(theta), np.sin(theta)
    X = ((u - cx) * c + (v - cy) * s) / scale
    Y = (-(u - cx) * s + (v - cy) * c) / scale
    pixel = 1.0 / (size * scale)

    width, height = rng.uniform(0.92, 1.08), rng.uniform(0.9, 1.08)
    ha, hb = 0.16 * rng.uniform(0.92, 1.06), 0.12 * rng.uniform(0.92, 1.08)
    hx = 0.045
    if cardiomegaly:
        grow = {"mild": 1.25, "moderate": 1.38, "marked": 1.52}[cardiomegaly]
        if knobs.finding_size != 1.0:
            grow = 1.0 + (grow - 1.0) * knobs.finding_size
        ha, hb, hx = ha * grow, hb * (1 + (grow - 1) * 0.5), hx + 0.02 * grow
    hy = 0.12 * height
    hc, hs = np.cos(-0.35), np.sin(-0.35)
    hX, hY = (X - hx) * hc + (Y - hy) * hs, -(X - hx) * hs + (Y - hy) * hc
    heart = (hX / ha) ** 2 + (hY / hb) ** 2 < 1

    lungs = {}
    density = np.zeros_like(X)
    body = ((X / 0.47) ** 2 + ((Y - 0.12) / 0.78) ** 2 < 1) | ((np.abs(X) < 0.09) & (Y < 0))
    shoulders = ((np.abs(X) < 0.5) & (Y > -0.58) & (Y < -0.3)) & (((np.abs(X) - 0.12) / 0.42) ** 2 + ((Y + 0.3) / 0.3) ** 2 < 1)
    density += 0.45 * ndimage.gaussian_filter((body | shoulders).astype(np.float32), 3.0)
    air = np.zeros_like(X)
    for side, name in ((-1, "right"), (1, "left")):
        mask, ellipse, params = _lung(X, Y, side, width, height, drop=0.02 if side > 0 else 0.0)
        mask &= ~heart
        lungs[name] = dict(mask=mask, ellipse=ellipse, side=side, **params)
        air += mask
    sigma = max(0.8, size * 0.005)
    density -= 0.32 * ndimage.gaussian_filter(air, sigma)
    density += 0.05 * ndimage.gaussian_filter(heart.astype(np.float32), sigma)
    # trachea, spine, hila, liver/abdomen, gastric bubble
    density -= 0.1 * ((np.abs(X) < 0.016) & (Y > -0.62) & (Y < -0.12))
    density += (np.abs(X) < 0.04) * (0.1 + 0.03 * np.cos(2 * np.pi * Y / 0.065)) * (Y > -0.6)
    for side in (-1, 1):
        density += 0.1 * np.exp(-((X - side * 0.1) ** 2 + (Y + 0.03) ** 2) / (2 * 0.03 ** 2))
    density += 0.06 * ((Y > lungs["right"]["base"]) & body)
    density -= 0.08 * (((X - 0.2) / 0.06) ** 2 + ((Y - lungs["left"]["base"] - 0.06) / 0.035) ** 2 < 1)
    # ribs: posterior (curving down laterally) and fainter anterior; clavicles
    ax = np.abs(X)
    thorax = (ax > 0.03) & (ax < 0.44) & body
    period = 0.07 * height  # one rib every 7% of the thorax; bands found by a modulo
    posterior = np.mod(Y + 0.42 + 0.15 * ax - 0.95 * ax ** 2 + period / 2, period) - period / 2
    anterior = np.mod(Y + 0.42 - 0.16 + 0.32 * ax + period / 2, period) - period / 2
    ribs = (np.exp(-(posterior / 0.012) ** 2) * (Y + 0.15 * ax - 0.95 * ax ** 2 < 0.3)
            + 0.45 * np.exp(-(anterior / 0.011) ** 2) * (ax > 0.08) * (Y < 0.35))
    density += 0.065 * np.clip(ribs, 0, 1.3) * thorax
    for side in (-1, 1):
        clav = _segment_distance(X, Y, [(side * 0.04, -0.43), (side * 0.2, -0.47), (side * 0.38, -0.5)])
        density += 0.2 * np.exp(-(clav / 0.016) ** 2)
    # vessel markings, densest at the hila
    texture = _smooth_noise(rng, size, 40) * 0.6 + _smooth_noise(rng, size, 14) * 0.4
    hilum_w = np.exp(-np.minimum((X + 0.1) ** 2 + Y ** 2, (X - 0.1) ** 2 + Y ** 2) / (2 * 0.16 ** 2))
    anatomy = Anatomy(X, Y, pixel, lungs, heart, (hx, hy, ha, hb), knobs)
    anatomy.vessels = 0.05 * np.clip(texture, 0, None) * (0.4 + hilum_w) * ndimage.gaussian_filter(air, sigma)
    return anatomy, density


def _lobe_mask(anat: Anatomy, lobe: str) -> np.ndarray:
    side = lobe.split()[0]
    lung = anat.lungs[side]
    t = (anat.Y - lung["apex"]) / (lung["base"] - lung["apex"])
    part = lobe.split()[1]
    if side == "right":
        band = {"upper": t < 0.42, "middle": (t > 0.42) & (t < 0.7), "lower": t > 0.6}[part]
    else:
        band = {"upper": t < 0.52, "lower": t > 0.5}[part]
    return lung["mask"] & band


def _random_point(rng, mask: np.ndarray, anat: Anatomy, margin: np.ndarray | None = None):
    candidates = np.flatnonzero(mask if margin is None else mask & margin)
    if candidates.size == 0:
        candidates = np.flatnonzero(mask)
    draw = int(rng.integers(candidates.size))
    spread = anat.knobs.location_spread
    if spread < 1.0 and candidates.size > 1:
        # keep the candidates within `spread` × the farthest one's distance from their centroid;
        # the same draw picks among them, so the generator's stream (and the report) is unchanged
        x, y = anat.X.flat[candidates], anat.Y.flat[candidates]
        dist = np.hypot(x - x.mean(), y - y.mean())
        near = candidates[dist <= max(spread * dist.max(), dist.min())]
        i = near[draw * near.size // candidates.size]
    else:
        i = candidates[draw]
    return float(anat.X.flat[i]), float(anat.Y.flat[i])


def draw_finding(rng, anat: Anatomy, inst: Instance, density: np.ndarray) -> np.ndarray:
    """Add one finding to ``density`` in place and return its boolean mask."""
    X, Y = anat.X, anat.Y
    size = X.shape[0]
    f = inst.finding
    grow = anat.knobs.finding_size
    if f == "cardiomegaly":
        return anat.heart.copy()
    if f == "pleural_effusion":
        lung = anat.lungs[inst.side]
        frac = {"small": 0.16, "moderate": 0.33, "large": 0.55}[inst.size] * rng.uniform(0.85, 1.15)
        frac = min(0.9, frac * grow)
        level = lung["base"] - frac * (lung["base"] - lung["apex"])
        lateral = np.clip((X - lung["xc"]) * lung["side"] / lung["a"], -1, 1)
        meniscus = level - 0.06 * (lateral + 1) / 2
        mask = lung["mask"] & (Y > meniscus)
        depth = np.clip((Y - meniscus) / 0.08, 0, 1)
        density += 0.34 * ndimage.gaussian_filter(mask * (0.55 + 0.45 * depth), 1.2).astype(np.float32)
        return mask
    if f == "pneumothorax":
        lung = anat.lungs[inst.side]
        k = {"small": 0.86, "moderate": 0.74, "large": 0.58}[inst.size]
        if grow != 1.0:  # the lung's collapsed share (1 − k) grows with the size knob
            k = max(0.2, 1.0 - (1.0 - k) * grow)
        xc = lung["xc"] - lung["side"] * (1 - k) * 0.06
        yc = lung["yc"] + (1 - k) * lung["b"] * 0.6
        a = lung["a"] * k * (0.72 + 0.38 * np.clip((Y - lung["apex"]) / (2 * lung["b"]), 0, 1))
        e = np.sqrt(((X - xc) / a) ** 2 + ((Y - yc) / (lung["b"] * k)) ** 2)
        mask = lung["mask"] & (e > 1)
        if inst.detail.get("apical"):
            mask &= Y < lung["apex"] + 0.35 * (lung["base"] - lung["apex"])
        anat.vessels[mask] = 0
        density -= 0.04 * mask
        line = np.exp(-((e - 1) * lung["a"] / 0.004) ** 2) * ndimage.binary_dilation(mask, iterations=2)
        density += 0.16 * line
        return mask
    if f in ("consolidation", "atelectasis"):
        region = _lobe_mask(anat, inst.lobe)
        if f == "atelectasis":  # plate-like band at the base
            x0, y0 = _random_point(rng, region, anat, np.abs(X - anat.lungs[inst.side]["xc"]) < 0.06)
            angle = rng.uniform(-0.3, 0.3)
            length = rng.uniform(0.07, 0.12) * grow
            dx, dy = np.cos(angle) * length, np.sin(angle) * length
            dist = _segment_distance(X, Y, [(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)])
            mask = (dist < rng.uniform(0.008, 0.016) * grow) & anat.lungs[inst.side]["mask"]
            density += 0.24 * ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
            return mask
        x0, y0 = _random_point(rng, region, anat)
        blob = _smooth_noise(rng, size, 12) * 0.5 - (((X - x0) ** 2 + (Y - y0) ** 2) / (2 * (0.08 * grow) ** 2))
        mask = region & (blob > -0.6)
        if mask.sum() < 30:
            mask = region
        fill = ndimage.gaussian_filter(mask.astype(np.float32), 1.8) * (0.85 + 0.3 * _smooth_noise(rng, size, 30))
        density += 0.27 * fill
        return mask
    if f in ("nodule", "mass"):
        region = _lobe_mask(anat, inst.lobe)
        x0, y0 = _random_point(rng, ndimage.binary_erosion(region, iterations=3) if region.sum() > 200 else region, anat)
        r = float(inst.size.split()[0]) * CM / 2
        angle = np.arctan2(Y - y0, X - x0)
        lobulation = 1 + (0.12 if f == "mass" else 0.04) * np.sin(3 * angle + rng.uniform(0, 6.3))
        d = np.hypot(X - x0, Y - y0) / (r * lobulation)
        mask = d < 1
        density += (0.2 if f == "nodule" else 0.3) * np.sqrt(np.clip(1 - d ** 2, 0, 1))
        return mask
    if f == "edema":
        w = np.exp(-np.minimum((X + 0.1) ** 2 + Y ** 2, (X - 0.1) ** 2 + Y ** 2) / (2 * (0.14 * grow) ** 2))
        strength = 0.13 if inst.size == "mild" else 0.22
        lungs = anat.lungs["right"]["mask"] | anat.lungs["left"]["mask"]
        haze = w * lungs * (0.8 + 0.35 * _smooth_noise(rng, size, 25))
        density += strength * ndimage.gaussian_filter(haze, 2.0)
        return lungs & (w > 0.4)
    if f == "support_devices":
        return _draw_device(rng, anat, inst, density)
    raise ValueError(f"unknown finding {f!r}")


def _draw_device(rng, anat: Anatomy, inst: Instance, density: np.ndarray) -> np.ndarray:
    X, Y = anat.X, anat.Y
    device = inst.detail["device"]
    jitter = lambda: rng.normal(0, 0.01)  # noqa: E731
    s = {"right": -1, "left": 1}.get(inst.side or "", 1)
    if device == "endotracheal tube":
        tip = -0.2 + jitter()
        points = [(jitter(), -0.8), (0.0 + jitter() * 0.3, tip)]
        inst.detail["tip"] = "above the carina"
        width = 0.007
    elif device == "nasogastric tube":
        points = [(0.005, -0.8), (0.012, -0.2), (0.03, 0.3), (0.12, 0.44 + jitter()), (0.19, 0.41)]
        width = 0.004
    elif device == "central venous catheter":
        points = [(s * 0.33, -0.5), (s * 0.12, -0.42), (-0.03, -0.25), (-0.035, -0.08 + jitter())]
        width = 0.004
    elif device == "pacemaker":
        gx, gy = 0.28 + jitter(), -0.38 + jitter()
        generator = (np.abs(X - gx) < 0.045) & (np.abs(Y - gy) < 0.032)
        density += 0.9 * generator
        points = [(gx - 0.03, gy), (0.02, -0.3), (-0.03, 0.05), (0.06, 0.2 + jitter())]
        width = 0.004
    elif device == "chest tube":
        points = [(s * 0.44, 0.18), (s * 0.33, 0.05), (s * 0.2, -0.28 + jitter())]
        width = 0.008
    else:
        raise ValueError(device)
    dist = _segment_distance(X, Y, points)
    density += 0.75 * np.exp(-(dist / max(width, anat.pixel * 0.7)) ** 2)
    mask = dist < max(width, anat.pixel) + 0.012
    if device == "pacemaker":
        mask |= generator
    return mask


def expose(rng, density: np.ndarray) -> np.ndarray:
    """Density → uint8 radiograph with random exposure, contrast, gamma, blur and noise."""
    size = density.shape[0]
    contrast, brightness, gamma = rng.uniform(1.05, 1.5), rng.uniform(-0.08, 0.08), rng.uniform(0.8, 1.25)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
    heel = rng.uniform(-0.06, 0.06) * (u - 0.5) + rng.uniform(-0.06, 0.06) * (v - 0.5)
    image = np.clip(density * contrast + brightness + heel, 0, 1) ** gamma
    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 1.1) * size / 256)
    image += rng.normal(0, rng.uniform(0.008, 0.035), image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_with_contrast(rng, anat: Anatomy, inst: Instance, density: np.ndarray) -> np.ndarray:
    """draw_finding, with the finding's change to density and vessel markings × contrast."""
    contrast = anat.knobs.contrast
    if contrast == 1.0:
        return draw_finding(rng, anat, inst, density)
    density_before, vessels_before = density.copy(), anat.vessels.copy()
    mask = draw_finding(rng, anat, inst, density)
    density[...] = density_before + contrast * (density - density_before)
    anat.vessels = vessels_before + contrast * (anat.vessels - vessels_before)
    return mask


def render(rng, instances: list[Instance], size: int,
           knobs: SynthConfig | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """One study: (size, size) uint8 image and one boolean mask per instance."""
    cardio = next((i.size for i in instances if i.finding == "cardiomegaly"), None)
    anat, density = build_anatomy(rng, size, cardio, knobs)
    masks = [_draw_with_contrast(rng, anat, inst, density) for inst in instances]
    density += anat.vessels
    return expose(rng, density), masks
