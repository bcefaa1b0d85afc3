"""``synthetic``: procedurally generated street scenes, the embedded default dataset.

Nothing can be downloaded where studies run, so the default dataset is generated. It is
small and fast (about 2 ms per 96x128 image on one CPU core, vectorised numpy, cached in
memory after the first access) yet built so that the architectural choices a
segmentation search explores change the score:

* **Large regions** -- sky at the top, a road in perspective converging to a vanishing
  point on the horizon, sidewalks on its sides, building facades (with window grids) and
  tree lines along the horizon.
* **Medium objects** -- cars on the road, pedestrians and trees on the sidewalks, drawn
  far to near and scaled with depth.
* **Thin structures** -- poles (1-2 px wide) with small traffic signs, dashed lane
  markings (1-2 px). Networks that downsample early lose them.
* **A context pair: road and sidewalk.** Both are painted from one and the same ground
  texture field (per-image grey, coarse blotches, fine grain), so a patch of sidewalk is
  distributed exactly like a patch of road. They are told apart only by where they lie:
  sidewalk is the band between a kerb line and the building facades; road lies between
  the two kerbs, carries the lane markings and the cars. Pixels in the middle of a wide
  sidewalk (up to ~40 px at 96x128) are classified correctly only by networks whose
  receptive field reaches the kerb or the facades.

Nothing is trivially colour-thresholded: colours of different classes overlap (grey
cars, poles and overcast skies look like road; beige facades like sidewalk in warm light),
and every image gets colour jitter (per-channel gain, brightness, offset), a linear
illumination gradient in a random direction, sensor noise, and 0-2 random occluders.

**Ignore (255), about 2.5% of the pixels:** the kerb lines between road and sidewalk
(they belong to neither, and labelling them as either would give that class a colour the
other lacks), a 1-pixel band on the outline of every car (object borders, as in PASCAL
VOC), and the occluders (unlabelled clutter, like Cityscapes' "static"/"dynamic"). Every
image has some: at least one side of the road always has a sidewalk, hence a kerb.

**Classes** (``num_classes=10``): 0 road, 1 sidewalk, 2 building, 3 sky, 4 car, 5 pole,
6 vegetation, 7 person, 8 lane_marking, 9 traffic_sign. With fewer classes the highest ids
are merged, in this order, into related lower ones: traffic_sign -> pole,
lane_marking -> road, person -> car, vegetation -> building, pole -> building,
car -> building, sky -> building, building -> sidewalk. So ``num_classes=6`` (the
default) is road (with lane markings), sidewalk, building (with vegetation), sky, car
(with persons), pole (with signs); ``4`` is road / sidewalk / everything upright / sky;
``2`` is road vs. the rest. The context pair survives every merge: even at 2 classes the
sidewalk, now "background", still looks like road. A merged class is named by joining its
members with ``+`` (``"road+lane_marking"``), except that a class holding sky and more is
named ``"background"``.

**Determinism:** image ``i`` is a pure function of ``(seed, i, image_size)``; the scene
layout is drawn from its own random stream before any per-pixel noise, so the same
``(seed, i)`` gives the same scene at every ``image_size``. ``num_classes`` only merges
labels. :data:`GENERATOR_VERSION` changes whenever the images do, and is part of
:meth:`SyntheticStreetScenes.describe` so caches keyed on it are invalidated.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from nas_optuna.data._source import IGNORE_INDEX, SegmentationSource
from nas_optuna.exceptions import ConfigError

__all__ = [
    "GENERATOR_VERSION",
    "SYNTHETIC_CLASSES",
    "SyntheticStreetScenes",
    "merged_class_names",
    "merged_label_table",
    "render_street_scene",
]

#: Bumped whenever the generated images or labels change.
GENERATOR_VERSION = 1

#: The classes the generator draws, in id order (``num_classes=10``).
SYNTHETIC_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "sky",
    "car",
    "pole",
    "vegetation",
    "person",
    "lane_marking",
    "traffic_sign",
)
(ROAD, SIDEWALK, BUILDING, SKY, CAR, POLE, VEGETATION, PERSON, LANE_MARKING, TRAFFIC_SIGN) = range(
    len(SYNTHETIC_CLASSES)
)
# When a class is dropped it joins this one. Every parent has a lower id, so reducing to
# k classes folds ids >= k downwards until they land below k.
_MERGE_INTO = {
    TRAFFIC_SIGN: POLE,
    LANE_MARKING: ROAD,
    PERSON: CAR,
    VEGETATION: BUILDING,
    POLE: BUILDING,
    CAR: BUILDING,
    SKY: BUILDING,
    BUILDING: SIDEWALK,
}
_MIN_CLASSES = 2
_MIN_SIZE = 16  # below this the scene degenerates into a few blocks
_BYTE_STD = float(np.sqrt((256**2 - 1) / 12))  # standard deviation of uniform bytes


def merged_label_table(num_classes: int) -> np.ndarray:
    """256-entry ``uint8`` table from generator class id to the id at ``num_classes``."""
    _check_num_classes(num_classes)
    table = np.arange(256, dtype=np.uint8)
    for cls in range(len(SYNTHETIC_CLASSES)):
        target = cls
        while target >= num_classes:
            target = _MERGE_INTO[target]
        table[cls] = target
    return table


def merged_class_names(num_classes: int) -> tuple[str, ...]:
    """Class names at ``num_classes`` (see the module docstring for the merge order)."""
    table = merged_label_table(num_classes)
    names = []
    for cls in range(num_classes):
        members = [n for i, n in enumerate(SYNTHETIC_CLASSES) if table[i] == cls]
        if len(members) > 1 and "sky" in members:
            names.append("background")
        else:
            names.append("+".join(members))
    return tuple(names)


def _is_int(value: object) -> bool:
    # numpy integers count, booleans do not (True would silently mean 1).
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_num_classes(num_classes: int) -> None:
    top = len(SYNTHETIC_CLASSES)
    if not _is_int(num_classes) or not _MIN_CLASSES <= num_classes <= top:
        raise ConfigError(
            f"num_classes for the synthetic dataset must be an integer in "
            f"[{_MIN_CLASSES}, {top}], got {num_classes!r}"
        )


class SyntheticStreetScenes(SegmentationSource):
    """Procedural street scenes with a context-dependent class pair (road / sidewalk).

    See the module docstring for the design. Samples are generated on first access and
    kept in memory (about 48 KB per 96x128 image).

    Args:
        num_images: Number of images.
        image_size: ``(height, width)``, each at least 16.
        num_classes: 2 to 10; fewer classes merge related ones.
        seed: Seed of the whole dataset; different seeds give different scenes.

    Raises:
        ConfigError: An argument is out of range.

    Example:
        >>> from nas_optuna.data import SyntheticStreetScenes
        >>> source = SyntheticStreetScenes(num_images=100, num_classes=6, seed=0)
        >>> image, mask = source.load(0)
        >>> image.shape, mask.shape, source.class_names[1]
        ((96, 128, 3), (96, 128), 'sidewalk')
    """

    name = "synthetic"

    def __init__(
        self,
        num_images: int = 400,
        image_size: Sequence[int] = (96, 128),
        num_classes: int = 6,
        seed: int = 0,
    ) -> None:
        if not _is_int(num_images) or num_images < 1:
            raise ConfigError(f"num_images must be a positive integer, got {num_images!r}")
        try:
            height, width = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ConfigError(f"image_size must be (height, width), got {image_size!r}") from None
        if min(height, width) < _MIN_SIZE:
            raise ConfigError(
                f"image_size must be at least {_MIN_SIZE}x{_MIN_SIZE}, got {image_size!r}"
            )
        _check_num_classes(num_classes)
        if not _is_int(seed) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.num_images = int(num_images)
        self.image_size = (height, width)
        self.num_classes = int(num_classes)
        self.class_names = merged_class_names(self.num_classes)
        self.seed = int(seed)
        self._table = merged_label_table(self.num_classes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._check_index(index)
        sample = self._cache.get(index)
        if sample is None:
            image, labels = render_street_scene(self.seed, index, self.image_size)
            sample = (image, self._table[labels])
            self._cache[index] = sample
        # Copies, so a caller editing a sample in place cannot corrupt the cache.
        return sample[0].copy(), sample[1].copy()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["image_size"] = list(self.image_size)
        info["seed"] = self.seed
        info["generator_version"] = GENERATOR_VERSION
        return info


# --------------------------------------------------------------------------------------
# Rendering. Geometry is drawn in normalised coordinates (u = x / W, v = y / H) so a scene
# does not depend on the resolution; "depth" t in [0, 1] is 0 on the horizon and 1 at the
# bottom edge, and everything standing on the ground scales with it. The image is built
# channel-first (3, H, W): numpy broadcasts a colour over a row of pixels far faster than
# over a trailing axis of length 3, which is what keeps a frame at about 2 ms.


@dataclass
class _Layout:
    horizon: float  # v of the horizon
    vanish: float  # u of the vanishing point
    road: float  # road half-width at the bottom edge, in u
    walks: tuple[float, float]  # left / right sidewalk widths at the bottom edge, in u (0: none)
    kerb_bright: float  # kerb colour relative to the ground (void, but visible)


@dataclass
class _Canvas:
    image: np.ndarray  # (3, H, W) float32, 0..255
    labels: np.ndarray  # (H, W) uint8, generator class ids or 255
    mid: np.ndarray  # (H, W) smooth noise, unit variance, ~6 px features at 96x128
    fine: np.ndarray  # (H, W) white noise, unit variance

    @property
    def height(self) -> int:
        return self.labels.shape[0]

    @property
    def width(self) -> int:
        return self.labels.shape[1]

    def window(
        self, top: float, bottom: float, left: float, right: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Pixel window covering a box in pixel units with a 1 px margin; None if off-image.

        Returns the row and column slices and the pixel-centre coordinates, shaped (h, 1)
        and (1, w) for broadcasting.
        """
        r0, r1 = max(0, int(np.floor(top)) - 1), min(self.height, int(np.ceil(bottom)) + 1)
        c0, c1 = max(0, int(np.floor(left)) - 1), min(self.width, int(np.ceil(right)) + 1)
        if r0 >= r1 or c0 >= c1:
            return None
        ys = (np.arange(r0, r1, dtype=np.float32) + 0.5)[:, None]
        xs = (np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :]
        return slice(r0, r1), slice(c0, c1), ys, xs

    def paint(self, rows: slice, cols: slice, where: np.ndarray, colour: Any, label: int) -> None:
        """Paints ``colour`` and ``label`` inside a window where ``where`` (h, w) holds.

        ``colour`` is an RGB triple or anything broadcastable to (3, h, w).
        """
        colour = np.asarray(colour, dtype=np.float32)
        if colour.ndim == 1:
            colour = colour[:, None, None]
        np.copyto(self.image[:, rows, cols], colour, where=where)
        np.copyto(self.labels[rows, cols], label, where=where)


def render_street_scene(
    seed: int, index: int, image_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Renders scene ``index`` of dataset ``seed`` with all 10 generator classes.

    Args:
        seed: Dataset seed (non-negative).
        index: Image index (non-negative).
        image_size: ``(height, width)``.

    Returns:
        ``(image, labels)``: ``uint8`` RGB ``(H, W, 3)`` and ``uint8`` ``(H, W)`` holding
        ids into :data:`SYNTHETIC_CLASSES` or 255.

    Example:
        >>> from nas_optuna.data import render_street_scene
        >>> image, labels = render_street_scene(seed=0, index=7, image_size=(96, 128))
    """
    height, width = (int(v) for v in image_size)
    # Two independent streams: the layout never consumes per-pixel noise, so it is the
    # same at every resolution.
    scene_seq, texture_seq = np.random.SeedSequence([seed, index]).spawn(2)
    rng = np.random.default_rng(scene_seq)
    tex = np.random.default_rng(texture_seq)

    # Per-pixel noise, drawn in a fixed order before anything else. Uniform bytes rather
    # than Gaussians: several times cheaper, and no network can tell.
    sensor = tex.integers(0, 256, (3, height, width), dtype=np.uint8)
    grain = _unit_noise(tex.integers(0, 256, (height, width), dtype=np.uint8))
    coarse = _smooth_noise(tex, (height, width), (4, 6))
    mid = _smooth_noise(tex, (height, width), (16, 20))

    v = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    u = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]

    layout = _sample_layout(rng)
    canvas = _Canvas(
        image=np.empty((3, height, width), dtype=np.float32),
        labels=np.empty((height, width), dtype=np.uint8),
        mid=mid,
        fine=grain,
    )
    ground, road = _paint_background(canvas, rng, layout, u, v, coarse)
    _paint_ground(canvas, rng, layout, u, v, coarse, ground, road)
    _paint_lane_markings(canvas, rng, layout, u, v, road)
    _paint_things(canvas, rng, layout)
    _paint_occluders(canvas, rng)
    image = _photometric(canvas.image, rng, u, v, sensor)
    return image, canvas.labels


def _unit_noise(noise: np.ndarray) -> np.ndarray:
    """Uniform bytes -> float32 with zero mean and unit variance."""
    out = noise.astype(np.float32)
    out -= 127.5
    out *= 1.0 / _BYTE_STD
    return out


def _frac(x: np.ndarray) -> np.ndarray:
    # np.mod is ~20x slower than this on float32, with the same result for x >= 0 and < 0.
    return x - np.floor(x)


def _rgb(values: Any) -> np.ndarray:
    """An RGB triple shaped (3, 1, 1) to broadcast over a channel-first image."""
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]
) -> np.ndarray:
    """Unit-variance noise varying over ``cells`` grid cells (bilinear upsampling)."""
    small = rng.standard_normal(cells, dtype=np.float32)
    field = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    # Interpolation shrinks the variance by a resolution-dependent factor; undo it so the
    # texture contrast is the same at every size.
    return field / max(float(field.std()), 1e-6)


def _sample_layout(rng: np.random.Generator) -> _Layout:
    walks = rng.uniform(0.16, 0.34, size=2)
    if rng.random() < 0.15:
        walks[rng.integers(2)] = 0.0  # road meets the facades directly on one side
    return _Layout(
        horizon=float(rng.uniform(0.33, 0.48)),
        vanish=float(rng.uniform(0.38, 0.62)),
        road=float(rng.uniform(0.22, 0.36)),
        walks=(float(walks[0]), float(walks[1])),
        kerb_bright=float(rng.choice([0.55, 1.45])),
    )


def _depth(layout: _Layout, v: np.ndarray) -> np.ndarray:
    return np.clip((v - layout.horizon) / (1.0 - layout.horizon), 0.0, 1.0)


_FACADES = np.array(
    [
        [200, 185, 160],
        [150, 75, 60],
        [130, 130, 135],
        [215, 210, 200],
        [110, 85, 65],
        [120, 135, 150],
        [175, 160, 120],
    ],
    dtype=np.float32,
)


def _paint_background(
    canvas: _Canvas,
    rng: np.random.Generator,
    layout: _Layout,
    u: np.ndarray,
    v: np.ndarray,
    coarse: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sky and the facade/tree-line band; returns the ground (road + sidewalk) and road maps."""
    t = _depth(layout, v)
    offset = u - layout.vanish  # signed horizontal distance to the vanishing point
    walk = np.where(offset < 0, layout.walks[0], layout.walks[1])  # (1, W)
    below = v > layout.horizon
    road = below & (np.abs(offset) < layout.road * t)
    ground = below & (np.abs(offset) < (layout.road + walk) * t)

    # Sky: vertical gradient towards a lighter horizon plus soft clouds; overcast skies are
    # grey, in the same range as road and facades.
    if rng.random() < 0.35:
        zenith = rng.uniform(150, 215) + rng.uniform(-8, 8, size=3)
        haze = zenith + rng.uniform(5, 25)
        clouds = 8.0
    else:
        zenith = np.array([rng.uniform(60, 110), rng.uniform(110, 160), rng.uniform(185, 240)])
        haze = np.array([rng.uniform(165, 215), rng.uniform(185, 225), rng.uniform(215, 250)])
        clouds = 16.0
    mix = np.clip(v / layout.horizon, 0.0, 1.0)  # (H, 1)
    np.multiply(coarse, np.float32(clouds), out=canvas.image)  # broadcast to all 3 channels
    canvas.image += _rgb(zenith) * (1.0 - mix) + _rgb(haze) * mix

    # Facade segments along the street: buildings (window grids) or tree lines. Roofs rise
    # away from the vanishing point, which is what perspective does to equal heights.
    bounds = [-0.05]
    while bounds[-1] < 1.05:
        bounds.append(bounds[-1] + float(rng.uniform(0.06, 0.2)))
    edges = np.asarray(bounds)
    n_seg = len(bounds) - 1
    is_tree = rng.random(n_seg) < 0.2
    heights = rng.uniform(0.08, 0.3, n_seg)
    colours = _FACADES[rng.integers(len(_FACADES), size=n_seg)] * rng.uniform(0.75, 1.2, (n_seg, 1))
    colours += rng.uniform(-12, 12, (n_seg, 3))
    greens = np.stack(
        [rng.uniform(35, 90, n_seg), rng.uniform(80, 140, n_seg), rng.uniform(30, 70, n_seg)], 1
    )
    period_u = rng.uniform(0.025, 0.05, n_seg)
    period_v = rng.uniform(0.035, 0.07, n_seg).astype(np.float32)
    glass = _rgb([45, 55, 70]) * np.float32(rng.uniform(0.7, 1.5))

    # Per column (W,) or per pixel (H, W) from here; the colour is formed once at the end.
    seg = np.clip(np.searchsorted(edges, u[0], side="right") - 1, 0, n_seg - 1)
    roof = (layout.horizon - heights[seg] * (0.5 + 1.5 * np.abs(offset[0]))).astype(np.float32)
    tree_col = is_tree[seg]
    leafy = tree_col.astype(np.float32)
    top = roof + (0.04 * leafy) * canvas.mid  # tree lines get a ragged top
    upright = ~ground & (v >= top)
    fx = _frac((u[0] - edges[seg]) / period_u[seg])  # (W,)
    fy = _frac((v - roof) / period_v[seg])  # (H, W)
    windows = ((fx > 0.3) & (fx < 0.75) & ~tree_col) & (fy > 0.3) & (fy < 0.75) & (v > roof + 0.02)
    base = np.where(tree_col[:, None], greens[seg], colours[seg]).astype(np.float32)
    base = np.ascontiguousarray(base.T)  # (3, W), rows contiguous for fast broadcasting
    # Foliage is strongly textured (leaves), facades only faintly (weathering); window
    # glass is dark and reflects a little of the facade.
    shade = 1.0 + 0.05 * canvas.mid + leafy * (0.25 * canvas.mid + 0.1 * canvas.fine)
    shade *= 1.0 - np.float32(0.7) * windows
    colour = base[:, None, :] * shade
    colour += windows * glass
    np.copyto(canvas.image, colour, where=upright)
    canvas.labels.fill(SKY)
    np.copyto(canvas.labels, BUILDING, where=upright)
    np.copyto(canvas.labels, VEGETATION, where=upright & tree_col)
    return ground, road


def _paint_ground(
    canvas: _Canvas,
    rng: np.random.Generator,
    layout: _Layout,
    u: np.ndarray,
    v: np.ndarray,
    coarse: np.ndarray,
    ground: np.ndarray,
    road: np.ndarray,
) -> None:
    """Road and sidewalk from ONE texture field (the context pair), then the kerbs."""
    base = _rgb(rng.uniform(60, 150) + rng.uniform(-6, 6, size=3))
    surface = 14.0 * coarse + 7.0 * canvas.mid + 9.0 * canvas.fine + base
    np.copyto(canvas.image, surface, where=ground)
    np.copyto(canvas.labels, SIDEWALK, where=ground)
    np.copyto(canvas.labels, ROAD, where=road)

    # Kerbs: a line on the road/sidewalk border, 1 px far away and ~3 px near. Void,
    # because its colour alone would reveal the border and so both classes.
    width = canvas.width
    t = _depth(layout, v)
    x = u * width
    half = np.maximum(0.5, 0.009 * width * t)
    kerb = np.zeros_like(ground)
    for sign, walk in ((-1.0, layout.walks[0]), (1.0, layout.walks[1])):
        if walk > 0.0:
            edge = (layout.vanish + sign * layout.road * t) * width
            kerb |= (np.abs(x - edge) < half) & (v > layout.horizon) & (t > 0.02)
    surface *= np.float32(layout.kerb_bright)
    np.copyto(canvas.image, surface, where=kerb)
    np.copyto(canvas.labels, IGNORE_INDEX, where=kerb)


def _paint_lane_markings(
    canvas: _Canvas,
    rng: np.random.Generator,
    layout: _Layout,
    u: np.ndarray,
    v: np.ndarray,
    road: np.ndarray,
) -> None:
    """Dashed lines converging on the vanishing point; 1-2 px wide."""
    width = canvas.width
    t = _depth(layout, v)
    x = u * width
    centre = rng.uniform(-0.1, 0.1)
    offsets = [centre] + ([centre - 0.5, centre + 0.5] if rng.random() < 0.5 else [])
    paint = _rgb([230, 190, 60]) if rng.random() < 0.3 else _rgb([rng.uniform(215, 250)] * 3)
    half = np.maximum(0.5, 0.008 * width * t)
    # Dashes repeat in depth, i.e. in 1/t; cut near the horizon where they would alias.
    frequency = rng.uniform(0.5, 0.9)
    far = 1.0 / np.maximum(t, 1e-3)
    lines = np.zeros_like(road)
    for k, offset in enumerate(offsets):
        phase = rng.random()
        solid = k > 0 and rng.random() < 0.3
        on = (_frac(phase + frequency * far) < 0.5) | solid
        centre_x = (layout.vanish + offset * layout.road * t) * width
        lines |= (np.abs(x - centre_x) < half) & (t > 0.1) & on
    lines &= road
    worn = canvas.image * np.float32(0.2)  # worn paint lets some asphalt through
    worn += 0.8 * paint
    np.copyto(canvas.image, worn, where=lines)
    np.copyto(canvas.labels, LANE_MARKING, where=lines)


def _paint_things(canvas: _Canvas, rng: np.random.Generator, layout: _Layout) -> None:
    """Cars, pedestrians, poles (with signs) and trees, painted far to near."""
    things: list[tuple[float, int, dict[str, Any]]] = []
    sides = [s for s, w in ((-1.0, layout.walks[0]), (1.0, layout.walks[1])) if w > 0]

    def on_walk(near: float, far: float) -> dict[str, Any]:
        # A spot on a sidewalk: ``near``/``far`` are fractions of its width from the kerb.
        side = sides[int(rng.integers(len(sides)))]
        walk = layout.walks[0] if side < 0 else layout.walks[1]
        depth = float(rng.uniform(0.2, 0.95))
        lateral = layout.road + float(rng.uniform(near, far)) * walk
        return {"depth": depth, "u": layout.vanish + side * lateral * depth}

    for _ in range(int(rng.integers(0, 4))):
        depth = float(rng.uniform(0.18, 0.95))
        spec = {
            "depth": depth,
            "u": layout.vanish + float(rng.uniform(-0.7, 0.7)) * layout.road * depth,
            "width": float(rng.uniform(0.7, 0.95)) * layout.road * depth,
            "aspect": float(rng.uniform(0.55, 0.75)),
            "colour": _car_colour(rng),
            "glass": float(rng.uniform(0.7, 1.4)),
        }
        things.append((depth, CAR, spec))
    for _ in range(int(rng.integers(0, 4))):
        spec = on_walk(0.15, 0.85)
        spec["height"] = float(rng.uniform(0.2, 0.26)) * spec["depth"]
        spec["shirt"] = rng.uniform(20, 235, size=3)
        spec["trousers"] = rng.uniform(20, 120, size=3)
        spec["skin"] = rng.uniform(90, 230) * np.array([1.0, 0.8, 0.65])
        things.append((spec["depth"], PERSON, spec))
    for _ in range(int(rng.integers(1, 4))):
        spec = on_walk(0.06, 0.4)
        spec["height"] = float(rng.uniform(0.45, 0.7)) * spec["depth"]
        spec["grey"] = float(rng.uniform(70, 160))
        spec["sign"] = int(rng.integers(0, 3))  # 0 none, 1 disc, 2 square
        spec["sign_colour"] = _SIGNS[int(rng.integers(len(_SIGNS)))]
        things.append((spec["depth"], POLE, spec))
    for _ in range(int(rng.integers(0, 3))):
        spec = on_walk(0.75, 0.95)
        spec["trunk"] = float(rng.uniform(0.12, 0.2)) * spec["depth"]
        spec["crown"] = float(rng.uniform(0.1, 0.17)) * spec["depth"]
        spec["green"] = [rng.uniform(35, 100), rng.uniform(80, 150), rng.uniform(25, 70)]
        things.append((spec["depth"], VEGETATION, spec))

    draw = {CAR: _draw_car, PERSON: _draw_person, POLE: _draw_pole, VEGETATION: _draw_tree}
    # Sort on depth only (stable): equal depths keep their order and dicts are never compared.
    for _, kind, spec in sorted(things, key=lambda item: item[0]):
        draw[kind](canvas, layout, spec)


_SIGNS = np.array([[200, 30, 35], [30, 70, 170], [235, 200, 40], [235, 235, 235]], np.float32)
_CARS = np.array(
    [[235, 235, 235], [170, 172, 175], [110, 110, 112], [30, 30, 32], [25, 45, 110], [160, 25, 30]],
    dtype=np.float32,
)


def _car_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.6:  # the usual car colours, greys included (road-like on purpose)
        colour = _CARS[int(rng.integers(len(_CARS)))]
        return np.clip(colour * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10, 3), 0, 255)
    return rng.uniform(20, 235, size=3)


def _foot(canvas: _Canvas, layout: _Layout, spec: dict[str, Any]) -> tuple[float, float]:
    """Pixel position of a thing's base point."""
    y = (layout.horizon + spec["depth"] * (1.0 - layout.horizon)) * canvas.height
    return spec["u"] * canvas.width, y


def _draw_car(canvas: _Canvas, layout: _Layout, spec: dict[str, Any]) -> None:
    x0, y0 = _foot(canvas, layout, spec)
    w = spec["width"] * canvas.width
    if w < 6.0:
        return  # too small to keep anything after the 1 px ignore band
    h = w * spec["aspect"]
    box = canvas.window(y0 - h, y0, x0 - w / 2, x0 + w / 2)
    if box is None:
        return
    rows, cols, ys, xs = box
    dx = np.abs(xs - x0)
    rel = (y0 - ys) / h  # 0 at the bottom of the wheels, 1 at the roof
    taper = 0.1 * (rel - 0.62) / 0.38  # the cabin narrows towards the roof
    lower = (rel > 0.1) & (rel <= 0.62) & (dx < w / 2)
    cabin = (rel > 0.62) & (rel <= 1.0) & (dx < w * (0.42 - taper))
    wheels = (rel <= 0.28) & (np.abs(dx - 0.32 * w) < 0.12 * w)
    body = lower | cabin | wheels
    glass = cabin & (rel < 0.95) & (dx < w * (0.36 - taper))
    tyres = wheels & ((rel <= 0.1) | (rel <= 0.2) & lower)
    colour = _rgb(spec["colour"]) * (0.85 + 0.25 * rel)  # roofs catch more light
    colour = np.broadcast_to(colour, (3, *body.shape)).copy()
    np.copyto(colour, _rgb([40, 50, 65]) * np.float32(spec["glass"]), where=glass)
    np.copyto(colour, np.float32(28.0), where=tyres)
    canvas.paint(rows, cols, body, colour, CAR)
    # Ignore band: the outermost ring of car pixels. The window has a 1 px margin, so the
    # body only touches its edge at the image border, where it is (rightly) not eroded.
    np.copyto(canvas.labels[rows, cols], IGNORE_INDEX, where=body & ~_erode(body))


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _draw_person(canvas: _Canvas, layout: _Layout, spec: dict[str, Any]) -> None:
    x0, y0 = _foot(canvas, layout, spec)
    h = spec["height"] * canvas.height
    w = max(1.0, 0.3 * h)
    box = canvas.window(y0 - h, y0, x0 - w / 2, x0 + w / 2)
    if box is None:
        return
    rows, cols, ys, xs = box
    body_cy, body_ry = y0 - 0.43 * h, 0.43 * h
    body = ((xs - x0) / (w / 2)) ** 2 + ((ys - body_cy) / body_ry) ** 2 < 1.0
    head_r = max(0.7, 0.1 * h)
    head = (xs - x0) ** 2 + (ys - (y0 - 0.9 * h)) ** 2 < head_r**2
    shape = body | head
    colour = np.where(ys < body_cy, _rgb(spec["shirt"]), _rgb(spec["trousers"]))  # (3, h, 1)
    colour = np.broadcast_to(colour, (3, *shape.shape)).copy()
    np.copyto(colour, _rgb(spec["skin"]), where=head)
    canvas.paint(rows, cols, shape, colour, PERSON)


def _draw_pole(canvas: _Canvas, layout: _Layout, spec: dict[str, Any]) -> None:
    x0, y0 = _foot(canvas, layout, spec)
    top = y0 - spec["height"] * canvas.height
    thickness = max(1, int(round(0.011 * canvas.width * spec["depth"])))
    start = np.floor(x0 - thickness / 2 + 0.5)  # whole pixels: 1 px poles stay 1 px wide
    radius = max(1.6, 0.03 * canvas.width * spec["depth"])
    box = canvas.window(top - radius, y0, x0 - radius, x0 + radius)
    if box is None:
        return
    rows, cols, ys, xs = box
    pole = (xs > start) & (xs < start + thickness) & (ys > top) & (ys < y0)
    metal = spec["grey"] * (1.0 + 0.15 * (xs - x0) / thickness)  # (1, w): rounded shading
    canvas.paint(rows, cols, pole, metal[None], POLE)
    if spec["sign"]:
        dx, dy = xs - x0, ys - top
        if spec["sign"] == 1:
            plate = dx**2 + dy**2 < radius**2
        else:
            plate = np.maximum(np.abs(dx), np.abs(dy)) < 0.85 * radius
        canvas.paint(rows, cols, plate, spec["sign_colour"], TRAFFIC_SIGN)


def _draw_tree(canvas: _Canvas, layout: _Layout, spec: dict[str, Any]) -> None:
    x0, y0 = _foot(canvas, layout, spec)
    trunk_h = spec["trunk"] * canvas.height
    ry = spec["crown"] * canvas.height
    rx = ry * 0.9
    cy = y0 - trunk_h - 0.7 * ry
    box = canvas.window(cy - 1.3 * ry, y0, x0 - 1.3 * rx, x0 + 1.3 * rx)
    if box is None:
        return
    rows, cols, ys, xs = box
    thickness = max(1.0, 0.012 * canvas.width * spec["depth"])
    trunk = (np.abs(xs - x0) < thickness / 2 + 0.25) & (ys > cy) & (ys < y0)
    mid = canvas.mid[rows, cols]
    crown = ((xs - x0) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1.0 + 0.35 * mid  # ragged edge
    canvas.paint(rows, cols, trunk, [75, 55, 40], VEGETATION)
    leaves = _rgb(spec["green"]) * (1.0 + 0.3 * mid + 0.1 * canvas.fine[rows, cols])
    canvas.paint(rows, cols, crown, leaves, VEGETATION)


def _paint_occluders(canvas: _Canvas, rng: np.random.Generator) -> None:
    """0-2 unlabelled blobs of random colour anywhere (void): clutter that hides context."""
    for _ in range(int(rng.integers(0, 3))):
        cy = float(rng.uniform(0, 1)) * canvas.height
        cx = float(rng.uniform(0, 1)) * canvas.width
        ry = float(rng.uniform(0.03, 0.08)) * canvas.height
        rx = ry * float(rng.uniform(0.6, 1.6))
        round_shape = rng.random() < 0.5
        colour = _rgb(rng.uniform(20, 235, size=3))
        box = canvas.window(cy - ry, cy + ry, cx - rx, cx + rx)
        if box is None:
            continue
        rows, cols, ys, xs = box
        if round_shape:
            blob = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1.0
        else:
            blob = (np.abs(xs - cx) < rx) & (np.abs(ys - cy) < ry)
        canvas.paint(rows, cols, blob, colour * (1.0 + 0.2 * canvas.mid[rows, cols]), IGNORE_INDEX)


def _photometric(
    image: np.ndarray, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, sensor: np.ndarray
) -> np.ndarray:
    """Illumination gradient, colour jitter and sensor noise; returns ``uint8`` (H, W, 3)."""
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.3)
    # Zero-mean over the frame and a uniformly random direction: no region is brighter on
    # average, which keeps road and sidewalk statistics identical across the dataset.
    light = 1.0 + strength * 2.0 * ((u - 0.5) * np.cos(angle) + (v - 0.5) * np.sin(angle))
    gains = _rgb(rng.uniform(0.88, 1.12, size=3) * rng.uniform(0.8, 1.2))
    offset = np.float32(rng.uniform(-12, 12))
    noise = np.float32(rng.uniform(2.0, 6.0))
    image *= light  # in place from here on: the canvas is not used again
    image *= gains
    image += offset
    image += _unit_noise(sensor) * noise
    np.clip(image, 0, 255, out=image)
    np.rint(image, out=image)
    return np.ascontiguousarray(image.astype(np.uint8).transpose(1, 2, 0))
