"""``streets``: the built-in data set. Procedurally generated street scenes that need no download.

Each image is a street seen from a car: sky, a road running to a vanishing point, pavements, building facades
with windows and shop signs, trees, fences, and the rare, small objects that make region selection matter (poles
with signs and traffic lights, pedestrians, bicyclists), plus cars and some unlabelled clutter (void). The
geometry is a simple pinhole camera 1.2 m above a flat ground, so objects shrink with distance and rare classes
gather in a few regions of a few images (poles at the kerb, pedestrians on the pavements, bicyclists on the road
near the kerb). Colours are drawn per image and overlap between classes (pavement against road, clothes and car
bodies in any colour), with shadows, illumination changes, noise and blur, so a network must use shape and
context too.

The world is built so that a small network can learn every class from the default 128x160 images: the street is
narrow (so objects on the pavements come close to the camera), poles are 0.3 m thick, dark painted metal with a
lit stripe, and never thinner than ``w / 60`` pixels; signs are saturated, white-rimmed plates, discs or traffic
lights; people have legs, arms, a head with hair; bicycles are seen from the side, two thick dark wheels and a
coloured frame under the rider. ``python -m fastral.train --dataset streets --test-split test`` (ResNet-18 width
16 FPN, 36 epochs, about 5 min on one CPU core) reaches a test mIoU of about 0.63 with every class above 0.2 IoU.

The classes are CamVid's 11 (same ids), with CamVid-like imbalance (see ``tests/test_data_streets.py``): road,
building, sky, tree and pavement cover about 88 % of the pixels, car about 5 %, pole, sign, fence, pedestrian and
bicyclist 0.7-1.7 % each. Image ``i`` of a split depends only on ``(seed, split, i)`` and the image size;
generating the default 520 images (360 train, 60 val, 100 test, 128x160) takes about 10-15 ms per image on one
core, i.e. seconds.
"""

from __future__ import annotations

import numpy as np

from .base import IGNORE_INDEX, SegmentationDataset
from .presets import STREETS

SPLIT_SIZES = {"train": 360, "val": 60, "test": 100}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}  # part of each image's seed, so splits never share an image

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

CAMERA_HEIGHT = 1.2  # metres; one metre on the ground at depth t spans t * ppm pixels

_FACADE_COLOURS = np.array(
    [[175, 155, 125], [135, 75, 60], [165, 160, 150], [205, 200, 190], [120, 100, 80], [160, 130, 110]], np.float32
)
_SIGN_COLOURS = np.array([[205, 35, 35], [35, 70, 185], [225, 195, 45], [40, 140, 70]], np.float32)
_POLE_COLOURS = np.array([[50, 52, 56], [40, 48, 62], [70, 70, 74], [62, 55, 50]], np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise ``[h, w]`` (about unit variance): a coarse normal grid, bilinearly upsampled."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    ys, xs = np.arange(h, dtype=np.float32) / cell, np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


class _Scene:
    """One image being drawn: an RGB float canvas, a label map and the camera geometry.

    Depth is ``t`` in (0, ~1]: the ground at depth t lies on row ``hz + t * (h - hz)`` (t = 1 is the bottom row)
    and a point ``a`` metres to the side and ``z`` metres up projects to ``x = vx + t * ppm * a``,
    ``y = ground(t) - t * ppm * z``. The distance along the street is ``w / (t * ppm)`` metres (focal = w).
    """

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.label = np.full((h, w), SKY, np.uint8)
        self.hz = h * rng.uniform(0.4, 0.5)  # horizon row
        self.vx = w * rng.uniform(0.4, 0.6)  # vanishing point column
        self.ppm = (h - self.hz) / CAMERA_HEIGHT
        self.ys = np.arange(h, dtype=np.float32)[:, None] + 0.5  # pixel centres
        self.xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
        self.road = rng.uniform(1.8, 3.0, 2)  # half-widths of the road, left and right (m)
        self.pave = rng.uniform(2.0, 4.0, 2)  # pavement widths (m)
        self.min_px = max(w / 60, 1.0)  # thinnest drawn part of an object (px): far poles and limbs stay visible

    # -- geometry ---------------------------------------------------------------------------------------------
    def depth(self, distance):
        return self.w / (np.asarray(distance, np.float32) * self.ppm)

    def ground(self, t):
        return self.hz + t * (self.h - self.hz)

    def project(self, t, lateral, height):
        return self.vx + t * self.ppm * lateral, self.ground(t) - t * self.ppm * height

    # -- drawing ----------------------------------------------------------------------------------------------
    def window(self, x0, x1, y0, y1):
        """Integer slices of the pixels whose centres fall in [x0, x1) x [y0, y1), or None if empty."""
        c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), self.w)
        r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), self.h)
        return (slice(r0, r1), slice(c0, c1)) if r0 < r1 and c0 < c1 else None

    def paint(self, where, mask, cls, colour):
        """Set ``label = cls`` and the colour where ``mask`` holds inside the window ``where`` (a pair of slices).

        ``mask`` broadcasts to the window, or is True for all of it; ``colour`` is an RGB triple or a per-pixel
        ``[h, w, 3]`` array of the window's shape.
        """
        if where is None:
            return
        label, rgb = self.label[where], self.rgb[where]
        if mask is True:  # a whole box: plain slice assignment is much cheaper than masking
            label[...] = cls
            rgb[...] = colour
            return
        mask = np.broadcast_to(mask, label.shape)
        label[mask] = cls
        rgb[mask] = colour[mask] if np.ndim(colour) == 3 else colour

    def rect(self, x0, x1, y0, y1, cls, colour, min_width=0.0):
        """An axis-aligned box; ``min_width`` keeps far thin objects (poles) at least that many pixels wide."""
        if x1 - x0 < min_width:
            pad = (min_width - (x1 - x0)) / 2
            x0, x1 = x0 - pad, x1 + pad
        self.paint(self.window(x0, x1, y0, y1), True, cls, colour)

    def ellipse(self, cx, cy, rx, ry, cls, colour, inner=0.0):
        """A filled ellipse, or a ring when ``inner`` (a fraction of the radii) is > 0."""
        where = self.window(cx - rx, cx + rx, cy - ry, cy + ry)
        if where is None:
            return
        d = ((self.xs[:, where[1]] - cx) / rx) ** 2 + ((self.ys[where[0]] - cy) / ry) ** 2
        self.paint(where, (d <= 1) & (d >= inner * inner), cls, colour)

    def colour(self, base, jitter):
        return np.clip(np.asarray(base, np.float32) + self.rng.uniform(-jitter, jitter, 3), 0, 255)


def _draw_sky(s: _Scene) -> None:
    rng = s.rng
    clear = rng.random() < 0.6
    top = s.colour([70, 125, 200] if clear else [150, 150, 160], 20)
    bottom = s.colour([175, 205, 235] if clear else [205, 205, 210], 15)
    frac = np.clip(s.ys / s.hz, 0, 1)[..., None]
    s.rgb[:] = top * (1 - frac) + bottom * frac
    clouds = np.clip(smooth_noise(rng, s.h, s.w, s.h / 5) - rng.uniform(0.3, 1.2), 0, 1)[..., None]
    s.rgb[:] = s.rgb * (1 - clouds) + 235 * clouds


def _draw_skyline(s: _Scene) -> None:
    """Far buildings along the horizon, around the vanishing point: a band of random-width blocks."""
    rng = s.rng
    edges = np.cumsum(rng.uniform(3, 12, s.w // 3 + 1))  # block boundaries, enough to pass the right edge
    block = np.searchsorted(edges, s.xs[0])
    heights = np.where(np.abs(s.xs[0] - s.vx) < s.w * 0.35, rng.uniform(0, 0.08 * s.h, len(edges))[block], 0)
    shades = s.colour([150, 150, 160], 20) + rng.uniform(-10, 10, (len(edges), 3)).astype(np.float32)
    band = (s.ys >= s.hz - heights) & (s.ys < s.hz + 1) & (heights > 0)
    s.paint((slice(None), slice(None)), band, BUILDING, np.broadcast_to(shades[block], (s.h, s.w, 3)))


def _draw_facades(s: _Scene, side: int) -> None:
    """Blocks of building facades on one side (-1 left, +1 right), parallel to the street, with windows.

    Each image column on that side sees the facade plane at one distance along the street, so blocks, windows
    and shop signs are laid out per column in metres and drawn on the columns' window in one go.
    """
    rng = s.rng
    r = int(side > 0)
    offset = s.road[r] + s.pave[r]  # lateral position of the facade plane (m)
    cols = s.xs[0] - s.vx if side > 0 else s.vx - s.xs[0]  # horizontal distance from the vanishing point
    t = np.maximum(cols / (s.ppm * offset), 0)
    dist = s.w / (np.maximum(t, 1e-6) * s.ppm)  # distance along the street of each column's facade (m)
    end = rng.uniform(50, 120)  # the street's far end (m): beyond it the skyline shows
    start, roof = 0.0, np.zeros(s.w, np.float32)
    colours = np.zeros((s.w, 3), np.float32)
    glass = np.zeros((s.w, 3), np.float32)
    while start < end:
        stop = start + rng.uniform(8, 30)
        cols_in = (dist >= start) & (dist < min(stop, end))
        roof[cols_in] = rng.uniform(4, 16) if rng.random() > 0.12 else 0  # 0: a gap between buildings
        colours[cols_in] = s.colour(_FACADE_COLOURS[rng.integers(len(_FACADE_COLOURS))], 20)
        glass[cols_in] = s.colour([45, 55, 70] if rng.random() < 0.6 else [140, 160, 180], 15)
        start = stop
    signs = [
        (rng.uniform(4, 35), rng.uniform(1.5, 4.0), rng.uniform(2.4, 4.0), rng.uniform(0.5, 1.0), rng.integers(4))
        for _ in range(rng.poisson(1.0))
    ]  # shop signs: (distance, length, height above ground, sign height, colour)
    built = np.flatnonzero(roof > 0)
    if built.size == 0:
        return
    c = slice(built[0], built[-1] + 1)
    t, dist, roof, colours, glass = t[c], dist[c], roof[c], colours[c], glass[c]
    ys = s.ys
    base = s.ground(t)[None, :]
    scale = np.maximum(t * s.ppm, 1e-6)[None, :]
    z = (base - ys) / scale  # height of each pixel on the facade (m)
    facade = (roof > 0)[None, :] & (z > 0) & (z <= roof[None, :])
    windows = ((z % 3.2) > 1.0) & ((z % 3.2) < 2.4) & (((dist / 2.5) % 1.0) > 0.35)[None, :] & (z > 2.5)
    where = (slice(None), c)
    s.paint(where, facade, BUILDING, np.where(windows[..., None], glass[None], colours[None]))
    for near, length, z0, height, colour in signs:
        sign = facade & ((dist >= near) & (dist < near + length))[None, :] & (z >= z0) & (z < z0 + height)
        s.paint(where, sign, SIGN, _SIGN_COLOURS[colour])


def _draw_grass(s: _Scene) -> None:
    """Verges beyond the pavements: seen only in the gaps between buildings (vegetation, i.e. class tree)."""
    texture = 1 + 0.15 * smooth_noise(s.rng, s.h, s.w, 3.0)[..., None]
    s.paint((slice(None), slice(None)), s.ys >= s.hz, TREE, s.colour([85, 120, 55], 20) * texture)


def _draw_ground(s: _Scene) -> None:
    rng = s.rng
    t = np.clip((s.ys - s.hz) / (s.h - s.hz), 0, None)
    below = s.ys >= s.hz
    xl, xr = s.vx - t * s.ppm * s.road[0], s.vx + t * s.ppm * s.road[1]
    pl, pr = xl - t * s.ppm * s.pave[0], xr + t * s.ppm * s.pave[1]
    road = below & (s.xs >= xl) & (s.xs < xr)
    pavement = below & ~road & (s.xs >= pl) & (s.xs < pr)
    grey = rng.uniform(65, 115)
    road_rgb = np.broadcast_to(s.colour([grey] * 3, 8), (s.h, s.w, 3)).copy()
    dist = s.w / (np.maximum(t, 1e-3) * s.ppm)
    lane = s.vx + t * s.ppm * rng.uniform(-1.0, 1.0) * min(s.road)
    marks = (np.abs(s.xs - lane) < np.maximum(0.5, 0.12 * t * s.ppm)) & ((dist % 6.0) < 3.0)
    road_rgb[marks & road] = s.colour([215, 215, 205], 15)
    s.paint((slice(None), slice(None)), road, ROAD, road_rgb)
    pave_rgb = np.broadcast_to(s.colour([grey + rng.uniform(25, 70)] * 3, 12), (s.h, s.w, 3)).copy()
    pave_rgb[((dist % 1.0) < 0.08) & pavement] *= 0.8  # paving joints
    s.paint((slice(None), slice(None)), pavement, PAVEMENT, pave_rgb)
    if rng.random() < 0.5:  # a building's shadow across part of the ground
        edge = s.vx + (s.ys - s.hz) * rng.uniform(-1.5, 1.5) + rng.uniform(-0.3, 0.3) * s.w
        shade = below & ((s.xs < edge) if rng.random() < 0.5 else (s.xs > edge))
        s.rgb[shade] *= rng.uniform(0.45, 0.7)


def _draw_fence(s: _Scene, side: int) -> None:
    """A fence in front of the facades of one side, between two random distances: bars and two rails."""
    rng = s.rng
    r = int(side > 0)
    lateral = side * (s.road[r] + s.pave[r] - 0.3)
    near, far = sorted(rng.uniform(3, 40, 2))
    t_near, t_far = s.depth(near), s.depth(far)
    x_near, _ = s.project(t_near, lateral, 0)
    x_far, _ = s.project(t_far, lateral, 0)
    where = s.window(min(x_near, x_far), max(x_near, x_far), s.hz - s.h, s.h)
    if where is None:
        return
    xs, ys = s.xs[:, where[1]], s.ys[where[0]]
    t = (xs - s.vx) / (s.ppm * lateral)
    base, step = s.ground(t), t * s.ppm
    z = (base - ys) / step
    dist = s.w / (t * s.ppm)
    top = rng.uniform(1.0, 1.8)
    bars = ((dist % 0.5) < 0.2) | ((z > top - 0.15) & (z < top)) | ((z > 0.15) & (z < 0.25))
    colour = s.colour([110, 90, 70] if rng.random() < 0.5 else [90, 110, 95], 20)  # wood or painted metal
    # Labelled as a whole panel (as annotators do at this resolution); the gaps between bars are darker.
    shaded = np.where(bars[..., None], colour, colour * 0.55)
    s.paint(where, (z >= 0) & (z < top), FENCE, np.broadcast_to(shaded, (*bars.shape, 3)))


def _draw_tree(s: _Scene, t: float, lateral: float) -> None:
    rng = s.rng
    height, radius = rng.uniform(3.5, 6.0), rng.uniform(1.3, 2.6)
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    s.rect(x - 0.15 * m, x + 0.15 * m, y_base - height * m, y_base, TREE, s.colour([80, 60, 40], 15), 1.0)
    green = s.colour([55, 95, 45], 20)
    for _ in range(rng.integers(3, 7)):  # a canopy of overlapping blobs with a leafy texture
        cx, cy = x + rng.normal(0, 0.5) * radius * m, y_base - (height + rng.normal(0, 0.4) * radius) * m
        r = radius * m * rng.uniform(0.5, 0.9)
        shade = green * rng.uniform(0.75, 1.2)
        s.ellipse(cx, cy, r, r * rng.uniform(0.8, 1.1), TREE, np.clip(shade, 0, 255))


def _draw_pole(s: _Scene, t: float, lateral: float) -> None:
    """A painted metal pole at the kerb (a brighter stripe down its middle: a lit cylinder), mostly with a sign
    (white-rimmed, rectangular or round) or a traffic light on it."""
    rng = s.rng
    height = rng.uniform(4.0, 7.0)
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    colour = s.colour(_POLE_COLOURS[rng.integers(len(_POLE_COLOURS))], 10)
    half = max(0.15 * m, s.min_px / 2)
    s.rect(x - half, x + half, y_base - height * m, y_base, POLE, colour)
    s.rect(x - half / 3, x + half / 3, y_base - height * m, y_base, POLE, np.clip(colour * 1.5 + 20, 0, 255))
    kind = rng.random()
    z = rng.uniform(2.3, min(3.6, height - 0.5))
    cy = y_base - z * m
    if kind < 0.4:  # a rectangular sign with a white rim
        w, h = rng.uniform(0.8, 1.2) * m, rng.uniform(0.6, 0.9) * m
        rim = max(0.08 * m, 0.5)
        s.rect(x - w / 2, x + w / 2, cy - h / 2, cy + h / 2, SIGN, s.colour([235, 235, 235], 10))
        s.rect(
            x - w / 2 + rim, x + w / 2 - rim, cy - h / 2 + rim, cy + h / 2 - rim, SIGN, _SIGN_COLOURS[rng.integers(4)]
        )
    elif kind < 0.7:  # a round sign: a coloured disc with a white (or red) ring
        r = rng.uniform(0.4, 0.6) * m
        ring = [235, 235, 235] if rng.random() < 0.5 else _SIGN_COLOURS[0]
        s.ellipse(x, cy, r, r, SIGN, _SIGN_COLOURS[rng.integers(1, 4)])
        s.ellipse(x, cy, r, r, SIGN, ring, inner=0.7)
    elif kind < 0.9:  # a traffic light: a black housing with one lit lamp
        w, h = 0.45 * m, 1.0 * m
        s.rect(x - w / 2, x + w / 2, cy - h / 2, cy + h / 2, SIGN, s.colour([30, 30, 30], 8))
        lit = rng.integers(3)
        light = [[235, 45, 30], [245, 185, 40], [60, 225, 95]][lit]
        s.ellipse(x, cy + (lit - 1) * 0.3 * m, 0.13 * m, 0.13 * m, SIGN, light)
    # else: a bare pole


def _draw_car(s: _Scene, t: float, lateral: float) -> None:
    rng = s.rng
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    body = s.colour(rng.uniform(20, 235, 3), 0) if rng.random() < 0.5 else s.colour([rng.uniform(20, 230)] * 3, 10)
    s.rect(x - 0.9 * m, x + 0.9 * m, y_base - 0.95 * m, y_base - 0.25 * m, CAR, body)
    s.rect(x - 0.75 * m, x + 0.75 * m, y_base - 1.5 * m, y_base - 0.95 * m, CAR, body * 0.9)
    s.rect(x - 0.65 * m, x + 0.65 * m, y_base - 1.42 * m, y_base - 1.0 * m, CAR, s.colour([40, 50, 60], 10))
    for dx in (-0.7, 0.7):
        s.rect(x + (dx - 0.17) * m, x + (dx + 0.17) * m, y_base - 0.35 * m, y_base, CAR, s.colour([25, 25, 25], 5))
        s.rect(x + (dx - 0.12) * m, x + (dx + 0.12) * m, y_base - 0.85 * m, y_base - 0.7 * m, CAR, [200, 30, 30])


def _draw_person(s: _Scene, t: float, lateral: float, cls: int, z0: float = 0.0) -> None:
    """A standing person (legs, torso, arms, a head with hair), or a rider when ``z0`` (saddle height) > 0."""
    rng = s.rng
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    height = rng.uniform(1.6, 1.95)
    shirt, trousers = s.colour(rng.uniform(20, 235, 3), 0), s.colour(rng.uniform(15, 150, 3), 0)
    hips = max(0.85 * height / 1.75, z0 + 0.15)
    shoulders = height - 0.27
    limb = max(0.09 * m, s.min_px / 2)
    stride = rng.uniform(0, 0.15) * m
    for side in (-1, 1):  # legs, apart by the stride (a rider's reach down to the pedals)
        leg = x + side * (0.1 * m + stride)
        s.rect(leg - limb, leg + limb, y_base - hips * m, y_base - z0 * m * 0.5, cls, trousers)
    for side in (-1, 1):  # arms along the torso
        arm = x + side * 0.3 * m
        s.rect(arm - limb * 0.8, arm + limb * 0.8, y_base - shoulders * m, y_base - (hips - 0.1) * m, cls, shirt * 0.85)
    s.rect(x - 0.25 * m, x + 0.25 * m, y_base - shoulders * m, y_base - hips * m, cls, shirt)
    skin = s.colour([rng.uniform(90, 225)] * 3, 0) * np.array([1.0, 0.82, 0.68], np.float32)
    head = y_base - (height - 0.13) * m
    s.ellipse(x, head, max(0.12 * m, 0.75), max(0.14 * m, 0.75), cls, skin)
    s.ellipse(x, head - 0.06 * m, max(0.12 * m, 0.5), max(0.08 * m, 0.5), cls, s.colour([rng.uniform(20, 90)] * 3, 5))


def _draw_bicyclist(s: _Scene, t: float, lateral: float) -> None:
    """A rider on a bicycle seen from the side: two thick dark wheels, a coloured frame, the rider on top."""
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    frame = s.colour(s.rng.uniform(20, 235, 3), 0)
    bar = max(0.06 * m, s.min_px / 2)
    for dx in (-0.55, 0.55):
        s.ellipse(x + dx * m, y_base - 0.36 * m, 0.36 * m, 0.36 * m, BICYCLIST, s.colour([25, 25, 25], 5), inner=0.6)
        s.ellipse(x + dx * m, y_base - 0.36 * m, 0.06 * m + 0.5, 0.06 * m + 0.5, BICYCLIST, frame)
    s.rect(x - 0.55 * m, x + 0.55 * m, y_base - 0.36 * m - bar, y_base - 0.36 * m + bar, BICYCLIST, frame)
    s.rect(x - 0.45 * m, x + 0.45 * m, y_base - 0.75 * m - bar, y_base - 0.75 * m + bar, BICYCLIST, frame)
    s.rect(x - bar, x + bar, y_base - 0.9 * m, y_base - 0.36 * m, BICYCLIST, frame)
    _draw_person(s, t, lateral, BICYCLIST, z0=0.85)


def _draw_clutter(s: _Scene, t: float, lateral: float) -> None:
    """Unlabelled street furniture (bins, boxes, bollards): void pixels the loss ignores."""
    x, y_base = s.project(t, lateral, 0)
    m = t * s.ppm
    w, h = s.rng.uniform(0.3, 0.8), s.rng.uniform(0.5, 1.1)
    s.rect(x - w / 2 * m, x + w / 2 * m, y_base - h * m, y_base, IGNORE_INDEX, s.colour(s.rng.uniform(40, 160, 3), 0))


def _place_objects(s: _Scene) -> list[tuple[float, object, tuple]]:
    """(depth, draw function, args) of every object, so they can be drawn far to near."""
    rng = s.rng
    objects = []

    def add(n, distances, laterals, draw, *extra):
        for _ in range(n):
            side = rng.choice([-1, 1])
            t = float(s.depth(rng.uniform(*distances)))
            objects.append((t, draw, (t, side * laterals(int(side > 0)), *extra)))

    add(rng.poisson(3.0), (4, 40), lambda r: s.road[r] + s.pave[r] * rng.uniform(0.6, 0.85), _draw_tree)
    add(rng.poisson(2.5), (3, 30), lambda r: s.road[r] + 0.4, _draw_pole)
    add(rng.poisson(3.0), (3.5, 35), lambda r: s.road[r] * rng.uniform(0.1, 0.75), _draw_car)
    add(rng.poisson(1.8), (4, 20), lambda r: s.road[r] + s.pave[r] * rng.uniform(0.15, 0.6), _draw_person, PEDESTRIAN)
    add(int(rng.random() < 0.1), (4, 15), lambda r: s.road[r] * rng.uniform(0.2, 0.9), _draw_person, PEDESTRIAN)
    add(int(rng.random() < 0.5), (5, 18), lambda r: s.road[r] - rng.uniform(0.5, 1.2), _draw_bicyclist)
    add(rng.poisson(0.6), (4, 30), lambda r: s.road[r] + s.pave[r] * rng.uniform(0.3, 0.8), _draw_clutter)
    return objects


def _blur(rgb: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur along both axes (edges replicated): the softness of a real lens."""
    out = rgb * 0.5
    out[1:] += rgb[:-1] * 0.25
    out[:-1] += rgb[1:] * 0.25
    out[0] += rgb[0] * 0.25
    out[-1] += rgb[-1] * 0.25
    rgb = out
    out = rgb * 0.5
    out[:, 1:] += rgb[:, :-1] * 0.25
    out[:, :-1] += rgb[:, 1:] * 0.25
    out[:, 0] += rgb[:, 0] * 0.25
    out[:, -1] += rgb[:, -1] * 0.25
    return out


def generate_scene(seed: int, split: str, index: int, size: tuple[int, int] = STREETS.size):
    """Image ``index`` of ``split``: uint8 RGB ``[H, W, 3]`` and uint8 labels ``[H, W]`` (255 = void).

    Depends only on ``(seed, split, index, size)``.
    """
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    s = _Scene(rng, *size)
    _draw_sky(s)
    _draw_skyline(s)
    _draw_grass(s)
    for side in (-1, 1):
        _draw_facades(s, side)
    _draw_ground(s)
    for side in (-1, 1):
        if rng.random() < 0.6:
            _draw_fence(s, side)
    for _, draw, args in sorted(_place_objects(s), key=lambda o: o[0]):
        draw(s, *args)
    light = rng.uniform(0.7, 1.2) * (1 + 0.12 * smooth_noise(rng, s.h, s.w, s.h / 3))[..., None]
    rgb = _blur(s.rgb * light * s.colour([1, 1, 1], 0.06))  # global brightness, uneven light, a colour cast
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * rng.uniform(3, 9)
    return np.clip(rgb, 0, 255).round().astype(np.uint8), s.label


class Streets(SegmentationDataset):
    """The built-in ``streets`` data set: one split of generated scenes, kept in memory.

    Args:
        split: "train" (360 images), "val" (60) or "test" (100).
        seed: the data set's seed; the same seed always gives the same images.
        num_images: override the split's size (e.g. a few images for a smoke test).
        size: ``(H, W)`` of the generated images (default 128x160); the region stays 32x32 unless given.
    """

    def __init__(self, split: str = "train", seed: int = 0, num_images: int | None = None, size=None, **kw):
        if split not in SPLIT_SIZES:
            raise ValueError(f"streets: argument 'split' must be one of {tuple(SPLIT_SIZES)}, got {split!r}")
        n = SPLIT_SIZES[split] if num_images is None else int(num_images)
        if n < 1:
            raise ValueError(f"streets: argument 'num_images' must be >= 1, got {num_images!r}")
        self.seed = int(seed)
        kw.setdefault("cache", True)
        super().__init__(STREETS, split, n, size=size, **kw)

    def path(self, i: int) -> str:
        return f"streets/seed{self.seed}/{self.split}/{self.index(i):05d}"

    def _read_raw(self, i: int):
        return generate_scene(self.seed, self.split, i, self.raw_size)
