"""
Procedural rendering of one dense retail-shelf image (the scenes of ``synthetic_shelves``).

A scene is a stack of shelf rows seen front-on. Every row holds products that stand on the
shelf edge and touch their neighbours edge to edge; long runs of a row share one design (the same
colours, logo and text), so the boundary between two neighbours is often only visible from the
pattern's period -- the failure mode dense detectors struggle with. Boxes may also be stacked two
or three high. Clutter: shelf edges with price tags, uprights splitting the shelf into bays,
hanging promotion signs that occlude product tops, empty slots, and products cut by the image
border. Lighting: global brightness / contrast / colour cast, a linear gradient, a vignette, soft
shadow blobs, glare, the shadow each shelf casts on the row below it; then mild blur and noise.

Annotation rule: every product whose area inside the image is at least
``ShelfSceneParams.min_visible_fraction`` (default 0.5) of its full area is annotated, with its box
clipped to the image; products cut more than that are drawn but not annotated. Occluders (signs,
price tags) never remove an annotation: the box is the whole product, as a human annotator draws it.

Everything is drawn from one ``np.random.Generator``, so a scene is a pure function of its seed.
"""
import colorsys
import string
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ShelfSceneParams", "render_shelf_scene"]


@dataclass(frozen=True)
class ShelfSceneParams:
    """
    The knobs of a scene. Changing any of them changes the cache tag of ``synthetic_shelves``.
    """

    # Image size; each image is landscape (long x short) or, with ``portrait_prob``, portrait.
    long_side: int = 512
    short_side: int = 384
    portrait_prob: float = 0.3
    # Layouts are re-drawn until the number of annotated products lies in this range.
    min_objects: int = 30
    max_objects: int = 150
    # A product cut by the image border is annotated when this fraction of its area is inside.
    min_visible_fraction: float = 0.5
    # Vertical distance between two shelves, in pixels (sets the product scale).
    min_shelf_pitch: int = 52
    max_shelf_pitch: int = 150
    # Probability that a row of single products is stocked several deep: seen from a little
    # above, the tops of the products behind show over the front ones, in shade, unannotated (as
    # annotators box only the front facing). 0 draws nothing more: the v1 scenes, byte for byte.
    # Tried at 0.5: no gain on real photos, a loss with jitter (results/synthetic_recipe.md).
    stock_depth_prob: float = 0.0
    # Probability that a box, bag or jar design carries a picture: a photo-like panel over a third
    # to two thirds of its face (a cereal bowl, a tobacco health warning), whose edges are not a
    # product's. 0 draws nothing more: the v1 scenes, byte for byte. At 0.5 (the _pictures
    # twins, which the real-shelves configs train on, and the synthetic configs beside v1): about
    # +5 AP on real photos, with or without jitter, for 2.8 AP (v1 quick start) and 0.4 AP (with
    # jitter) on synthetic val (results/synthetic_recipe.md).
    picture_prob: float = 0.0


# Product kinds: (relative frequency, min aspect, max aspect) with aspect = width / height.
_KINDS = {
    "box": (0.34, 0.45, 1.4),
    "can": (0.16, 0.45, 0.75),
    "bottle": (0.22, 0.24, 0.42),
    "jar": (0.14, 0.6, 1.0),
    "bag": (0.14, 0.55, 0.95),
}
_KIND_NAMES = list(_KINDS)
# Kinds whose face is flat and wide enough to carry a picture.
_PICTURE_KINDS = ("box", "bag", "jar")
_KIND_PROBS = np.array([v[0] for v in _KINDS.values()]) / sum(v[0] for v in _KINDS.values())
_MAX_LAYOUT_TRIES = 50


def render_shelf_scene(rng, params=ShelfSceneParams()):
    """
    Args:
        rng (np.random.Generator): the only source of randomness.
        params (ShelfSceneParams):

    Returns:
        image (np.ndarray): (H, W, 3) uint8, BGR (OpenCV's order).
        boxes (np.ndarray): (N, 4) int64 XYXY boxes of the annotated products, absolute pixels,
            x2/y2 exclusive (a product covering columns 3..9 has x1=3, x2=10), so two touching
            neighbours share a coordinate (left.x2 == right.x1).
    """
    if rng.random() < params.portrait_prob:
        width, height = params.short_side, params.long_side
    else:
        width, height = params.long_side, params.short_side
    for _ in range(_MAX_LAYOUT_TRIES):
        layout = _sample_layout(rng, width, height, params)
        num = int(layout["annotated"].sum())
        if params.min_objects <= num <= params.max_objects:
            break
    else:
        raise RuntimeError(
            f"No shelf layout of {width}x{height} with {params.min_objects}-{params.max_objects}"
            f" objects in {_MAX_LAYOUT_TRIES} tries; widen the range or the shelf pitch range."
        )
    image = _render(rng, layout, width, height)
    boxes = layout["boxes"][layout["annotated"]]
    boxes = np.concatenate(
        [np.maximum(boxes[:, :2], 0), np.minimum(boxes[:, 2:], [width, height])], axis=1
    )
    return image, boxes.astype(np.int64)


# ------------------------------------------------------------------------------------------ #
# Layout: where rows, bays, products, tags and signs go. Cheap, so it can be re-drawn.
# ------------------------------------------------------------------------------------------ #
def _random_color(rng, sat=(0.35, 1.0), val=(0.3, 1.0), hue=None):
    h = rng.random() if hue is None else hue % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return (255.0 * b, 255.0 * g, 255.0 * r)


def _sample_design(rng, kind, picture_prob=0.0):
    """A product family's look: colours, label pattern, logo, text, and maybe a picture."""
    hue = rng.random()
    design = {
        "kind": kind,
        "hue": hue,
        "base": _random_color(rng, hue=hue),
        "second": _random_color(rng),
        "accent": _random_color(rng, sat=(0.0, 1.0)),
        "cap": _random_color(rng, sat=(0.0, 0.9), val=(0.1, 0.95)),
        "band": (rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.45)) if rng.random() < 0.75 else None,
        "stripes": int(rng.integers(0, 4)),
        "logo": rng.choice(["circle", "ellipse", "diamond", "none"], p=[0.3, 0.3, 0.2, 0.2]),
        "logo_pos": (rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.45)),
        "text": "".join(rng.choice(list(string.ascii_uppercase), size=int(rng.integers(2, 6)))),
        # A visible outline or seam makes neighbours easy to split; most products have none.
        "outline": rng.random() < 0.3,
        "top_face": kind == "box" and rng.random() < 0.4,
        "picture": None,
    }
    # The short-circuit keeps the random stream of picture_prob 0 as it was.
    if picture_prob > 0 and kind in _PICTURE_KINDS and rng.random() < picture_prob:
        height = rng.uniform(0.35, 0.65)
        margin = rng.uniform(0.0, 0.12) if rng.random() < 0.6 else 0.0
        # (top, height, side margin) as fractions of the label's height and width.
        design["picture"] = (rng.uniform(0.05, 0.95 - height), height, margin)
    return design


def _variant(rng, design):
    """A look-alike of ``design``: same layout, shifted hue (a flavour of the same brand)."""
    out = dict(design)
    shift = rng.uniform(0.03, 0.12) * rng.choice([-1, 1]) if rng.random() < 0.7 else rng.random()
    out["hue"] = design["hue"] + shift
    out["base"] = _random_color(rng, hue=out["hue"])
    if rng.random() < 0.5:
        out["second"] = _random_color(rng)
    return out


def _sample_layout(rng, width, height, params):
    pitch = rng.uniform(params.min_shelf_pitch, params.max_shelf_pitch)
    edge = int(rng.integers(5, 13))  # thickness of the shelf's front edge
    layout = {
        "back": _random_color(rng, sat=(0.0, 0.25), val=(0.15, 0.85)),
        "edge_color": _random_color(rng, sat=(0.0, 0.6), val=(0.2, 0.95)),
        "edge": edge,
        "rows": [],
        "products": [],  # (x, y, w, h, sprite key, gain)
        "designs": {},  # sprite key -> (design, w, h)
        "tags": [],
        "signs": [],
        "posts": [],
        "behind": [],  # products of the second facing, drawn first: (x, y, w, h, key, gain)
    }
    # Uprights split all rows into bays at the same x.
    bays = [(-width, 2 * width)]
    if rng.random() < 0.35:
        post_w = int(rng.integers(8, 16))
        post_x = int(rng.uniform(0.2, 0.8) * width)
        layout["posts"].append((post_x, post_w))
        bays = [(-width, post_x), (post_x + post_w, 2 * width)]

    y = -rng.uniform(0.0, 0.6) * pitch
    while y < height:
        row_pitch = pitch * rng.uniform(0.88, 1.12)
        top, bottom = int(round(y)), int(round(y + row_pitch)) - edge
        layout["rows"].append((top, bottom))
        if bottom - top > 12:
            _fill_row(rng, layout, top, bottom, bays, width, len(layout["rows"]), params)
        y += row_pitch

    boxes = np.array([p[:4] for p in layout["products"]], dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    clipped_w = np.clip(boxes[:, 2], 0, width) - np.clip(boxes[:, 0], 0, width)
    clipped_h = np.clip(boxes[:, 3], 0, height) - np.clip(boxes[:, 1], 0, height)
    full_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = clipped_w * clipped_h / full_area
    layout["boxes"] = boxes
    layout["annotated"] = (
        (visible >= params.min_visible_fraction) & (clipped_w >= 2) & (clipped_h >= 2)
    )
    return layout


def _fill_row(rng, layout, top, bottom, bays, width, row_id, params):
    """Fill the product zone [top, bottom) of one row with touching runs of look-alikes."""
    stock_depth_prob = params.stock_depth_prob
    avail = bottom - top
    kind = str(rng.choice(_KIND_NAMES, p=_KIND_PROBS))
    _, lo, hi = _KINDS[kind]
    family = _sample_design(rng, kind, params.picture_prob)
    variants = [family] + [_variant(rng, family) for _ in range(int(rng.integers(0, 3)))]
    head_room = rng.uniform(0.05, 0.35)
    base_h = avail * (1.0 - head_room)
    base_aspect = rng.uniform(lo, hi)
    levels = 1
    if kind == "box" and rng.random() < 0.45:
        levels = int(rng.integers(2, 4))
        base_h = avail * rng.uniform(0.85, 0.98) / levels
    sizes = []
    for _ in variants:
        h = base_h * (rng.uniform(0.85, 1.0) if rng.random() < 0.4 else 1.0)
        w = h * base_aspect * (rng.uniform(0.8, 1.2) if rng.random() < 0.4 else 1.0)
        sizes.append((max(int(round(w)), 6), max(int(round(h)), 8)))

    jitter = levels == 1 and rng.random() < 0.4
    # The short-circuit keeps the random stream of stock_depth_prob 0 as it was.
    deep = stock_depth_prob > 0 and levels == 1 and rng.random() < stock_depth_prob
    if deep:
        # How far the second facing shows above the first, and how much darker it is.
        peek = rng.uniform(0.06, 0.3)
        shade = rng.uniform(0.5, 0.8)
    for bay_x0, bay_x1 in bays:
        x = bay_x0
        if bay_x0 < 0:
            # The image border cuts the row at a random phase.
            x = -int(rng.integers(0, sizes[0][0] + 1))
        elif rng.random() < 0.5:
            x += int(rng.integers(0, 4))
        stop = min(bay_x1, width + 1)
        while x < stop:
            v = int(rng.integers(len(variants)))
            w, h = sizes[v]
            if x + w > bay_x1:
                break  # the bay is full; its last sliver stays empty, as on real shelves
            run = int(rng.integers(2, 16))
            tag_x = x
            for _ in range(run):
                if x + w > bay_x1 or x >= stop:
                    break
                if rng.random() < 0.02:
                    x += w  # an empty slot: the shelf's back shows through
                    continue
                for level in range(levels):
                    # Products pushed a little further back look a pixel or two shorter.
                    dh = int(rng.integers(0, 3)) if jitter else 0
                    key = (row_id, v, h - dh)
                    layout["designs"][key] = (variants[v], w, h - dh)
                    gain = rng.uniform(0.92, 1.08)
                    y = bottom - (level + 1) * h + dh
                    layout["products"].append((x, y, w, h - dh, key, gain))
                    if deep and rng.random() < 0.85:  # now and then the back is sold out
                        dy = min(int(round(peek * h)), y - top)  # no higher than the shelf above
                        layout["behind"].append((x, y - dy, w, h - dh, key, gain * shade))
                x += w
            if rng.random() < 0.8:
                layout["tags"].append((tag_x, bottom, int(rng.integers(14, 30))))
            if rng.random() < 0.04:
                layout["signs"].append((tag_x + int(rng.integers(0, 20)), bottom + layout["edge"]))
            # Runs mostly touch; sometimes a sliver of shelf shows between them.
            if rng.random() < 0.25:
                x += int(rng.integers(1, 5))


# ------------------------------------------------------------------------------------------ #
# Rendering
# ------------------------------------------------------------------------------------------ #
def _draw_shape(rng, img, design, w, h):
    """
    Draws the parts of the product's shape that are not label (a bottle's cap, a jar's lid, a
    can's rims) on ``img``; returns its mask (None: the whole box) and the label's top row.
    """
    kind = design["kind"]
    mask = None
    body_top = 0
    if kind == "bottle":
        mask = np.zeros((h, w), np.uint8)
        neck_w = max(int(w * rng.uniform(0.3, 0.45)), 2)
        neck_h = int(h * rng.uniform(0.18, 0.3))
        shoulder = int(h * rng.uniform(0.08, 0.16))
        nx0 = (w - neck_w) // 2
        body_top = neck_h + shoulder
        pts = np.array(
            [[nx0, 0], [nx0 + neck_w - 1, 0], [nx0 + neck_w - 1, neck_h], [w - 1, body_top],
             [w - 1, h - 1], [0, h - 1], [0, body_top], [nx0, neck_h]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
        cap_h = max(int(h * 0.07), 2)
        img[:cap_h] = np.array(design["cap"], np.uint8)
    elif kind == "bag":
        # A crimped top seal: a zigzag of small teeth.
        mask = np.ones((h, w), np.uint8)
        teeth = max(int(h * 0.05), 2)
        crimp = np.abs((np.arange(w) % 4) - 2) * teeth // 2
        mask[:teeth] = np.arange(teeth)[:, None] >= crimp[None, :]
        mask[0, int(w * 0.3) : int(w * 0.7) + 1] = 1  # keep the box tight at the top
    elif kind == "jar":
        lid_h = max(int(h * rng.uniform(0.12, 0.2)), 2)
        img[:lid_h] = np.array(design["cap"], np.uint8)
        body_top = lid_h
    elif kind == "can":
        rim = max(h // 20, 1)
        img[:rim] = (200, 200, 205)
        img[h - rim:] = (170, 170, 175)
    return mask, body_top


def _draw_label(rng, img, design, y0, w, h):
    """Draws the label on ``img`` below row ``y0``: a band, stripes, a picture, a logo, text."""
    body_h = h - y0
    if design["band"] is not None:
        by, bh = design["band"]
        cv2.rectangle(img, (0, y0 + int(body_h * by)), (w - 1, y0 + int(body_h * (by + bh))),
                      design["second"], -1)
    for i in range(design["stripes"]):
        sy = y0 + int(body_h * (0.08 + 0.12 * i))
        cv2.line(img, (0, sy), (w - 1, sy), design["accent"], max(1, body_h // 40))
    if design["picture"] is not None:
        _draw_picture(rng, img, y0, body_h, design["picture"])
    lx, ly, ls = design["logo_pos"]
    center = (int(w * lx), y0 + int(body_h * ly))
    radius = max(int(min(w, body_h) * ls / 2), 2)
    if design["logo"] == "circle":
        cv2.circle(img, center, radius, design["accent"], -1, cv2.LINE_AA)
    elif design["logo"] == "ellipse":
        cv2.ellipse(img, center, (radius, max(radius // 2, 1)), 0, 0, 360, design["accent"], -1,
                    cv2.LINE_AA)
    elif design["logo"] == "diamond":
        cx, cy = center
        pts = np.array([[cx, cy - radius], [cx + radius, cy], [cx, cy + radius],
                        [cx - radius, cy]], np.int32)
        cv2.fillPoly(img, [pts], design["accent"], cv2.LINE_AA)
    scale = max(w / (22.0 * len(design["text"])), 0.2)
    cv2.putText(img, design["text"], (max(int(w * 0.08), 0), y0 + int(body_h * 0.85)),
                cv2.FONT_HERSHEY_SIMPLEX, scale, (30, 30, 30) if sum(design["base"]) > 380
                else (235, 235, 235), 1, cv2.LINE_AA)
    if design["outline"]:
        cv2.rectangle(img, (0, 0), (w - 1, h - 1), tuple(0.55 * c for c in design["base"]), 1)
    if design["top_face"]:
        img[: max(h // 12, 2)] = np.clip(img[: max(h // 12, 2)].astype(np.int32) + 45, 0, 255)


def _shade(rng, sprite, kind, w, h):
    """A cylinder's shading and specular stripe, or a bag's fold, on the float sprite."""
    if kind in ("can", "bottle", "jar"):
        # Cylinder shading and a specular stripe.
        u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2.0 - 1.0
        profile = 0.62 + 0.38 * np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0))
        sprite *= profile[None, :, None]
        spec = np.exp(-(((u + 0.4) / 0.12) ** 2)) * rng.uniform(20, 70)
        sprite += spec[None, :, None]
    elif kind == "bag":
        v = (np.arange(h, dtype=np.float32) + 0.5) / h
        sprite *= (0.85 + 0.15 * np.sin(v * np.pi))[:, None, None]
    return sprite


def _render_product(rng, design, w, h):
    """
    Returns:
        sprite (np.ndarray): (h, w, 3) float32 BGR.
        mask (np.ndarray or None): (h, w) bool, the product's pixels; None means all of them.
            The mask touches all four sides, so the box (0, 0, w, h) is tight.
    """
    kind = design["kind"]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.array(design["base"], np.uint8)
    mask, body_top = _draw_shape(rng, img, design, w, h)
    _draw_label(rng, img, design, body_top, w, h)
    sprite = _shade(rng, img.astype(np.float32), kind, w, h)
    if mask is not None:
        mask = mask.astype(bool)
    return sprite, mask


def _draw_picture(rng, img, y0, body_h, picture):
    """
    A photo-like panel on the label, in place: smooth random colours, a few shapes and fine
    texture, sometimes framed. Each sprite draws its own, so look-alike variants differ in it.
    """
    top, height, margin = picture
    w = img.shape[1]
    px0, px1 = int(round(w * margin)), w - int(round(w * margin))
    py0 = y0 + int(body_h * top)
    py1 = min(py0 + max(int(round(body_h * height)), 2), img.shape[0])
    ph, pw = py1 - py0, px1 - px0
    if ph < 2 or pw < 2:
        return
    grid = rng.uniform(0, 255, size=(int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3))
    panel = cv2.resize(grid.astype(np.float32), (pw, ph), interpolation=cv2.INTER_CUBIC)
    # Photos are less saturated than random colours.
    grey = panel.mean(axis=2, keepdims=True)
    panel = grey + (panel - grey) * rng.uniform(0.2, 0.8)
    for _ in range(int(rng.integers(1, 4))):
        center = (int(rng.uniform(0, pw)), int(rng.uniform(0, ph)))
        axes = (max(int(rng.uniform(0.1, 0.45) * pw), 1), max(int(rng.uniform(0.1, 0.45) * ph), 1))
        cv2.ellipse(
            panel, center, axes, rng.uniform(0, 180), 0, 360, _random_color(rng), -1, cv2.LINE_AA
        )
    texture = cv2.resize(
        rng.standard_normal((max(ph // 3, 1), max(pw // 3, 1))).astype(np.float32),
        (pw, ph),
        interpolation=cv2.INTER_LINEAR,
    )
    panel += texture[:, :, None] * rng.uniform(5, 25)
    if rng.random() < 0.5:
        frame = (20, 20, 20) if rng.random() < 0.6 else (235, 235, 235)
        cv2.rectangle(panel, (0, 0), (pw - 1, ph - 1), frame, 1)
    img[py0:py1, px0:px1] = np.clip(panel, 0, 255).astype(np.uint8)


def _paste(canvas, sprite, mask, x, y, gain):
    """Paste a sprite at (x, y) (may be partly outside the canvas)."""
    h, w = sprite.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    patch = sprite[y0 - y : y1 - y, x0 - x : x1 - x] * gain
    if mask is None:
        canvas[y0:y1, x0:x1] = patch
    else:
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x]
        canvas[y0:y1, x0:x1][m] = patch[m]


def _upsample(low, height, width):
    """A coarse (h, w) field -> a smooth (height, width) float32 one."""
    return cv2.resize(low.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _render(rng, layout, width, height):
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = 0.8 * np.array(layout["back"], np.float32)  # the back wall is in shade
    sprites = {
        key: _render_product(rng, d, w, h) for key, (d, w, h) in layout["designs"].items()
    }
    for x, y, w, h, key, gain in layout["behind"] + layout["products"]:
        sprite, mask = sprites[key]
        _paste(canvas, sprite, mask, x, y, gain)
    _draw_fixtures(rng, canvas, layout)
    return _apply_lighting(rng, canvas, layout)


def _draw_fixtures(rng, canvas, layout):
    """Shelf edges with a lit lip, price tags, uprights and hanging signs, drawn in place."""
    height = canvas.shape[0]
    edge = layout["edge"]
    edge_color = np.array(layout["edge_color"], np.float32)
    for _, bottom in layout["rows"]:
        y0, y1 = max(bottom, 0), min(bottom + edge, height)
        if y1 > y0:
            canvas[y0:y1] = edge_color
            canvas[y0 : min(y0 + 2, y1)] = np.minimum(edge_color * 1.35 + 20, 255)
    for tx, ty, tw in layout["tags"]:
        tag_color = (235, 235, 235) if rng.random() < 0.6 else (60, 215, 240)
        ty0, ty1 = ty + 2, ty + edge - 1
        cv2.rectangle(canvas, (tx, ty0), (tx + tw, ty1), tag_color, -1)
        for k in range(int(rng.integers(2, 5))):  # the price digits
            dx = tx + 2 + k * 4
            cv2.line(canvas, (dx, ty0 + 2), (dx, max(ty1 - 2, ty0 + 2)), (40, 40, 40), 1)
    for px, pw in layout["posts"]:
        canvas[:, px : px + pw] = edge_color * 0.7
        canvas[:, px : px + 2] = np.minimum(edge_color * 1.2 + 20, 255)
    for sx, sy in layout["signs"]:
        sw, sh = int(rng.integers(16, 34)), int(rng.integers(18, 40))
        cv2.rectangle(canvas, (sx, sy), (sx + sw, sy + sh), _random_color(rng, sat=(0.7, 1)), -1)
        cv2.rectangle(canvas, (sx + 3, sy + sh // 3), (sx + sw - 3, sy + sh // 2),
                      (250, 250, 250), -1)


def _apply_lighting(rng, canvas, layout):
    """
    Light the (H, W, 3) float32 canvas and add camera blur and noise; returns it as uint8.
    """
    height, width = canvas.shape[:2]
    # The shelf above shades the top of each row, products included.
    row_light = np.ones(height, np.float32)
    for top, bottom in layout["rows"]:
        y = np.arange(top, bottom + layout["edge"])
        inside = (y >= 0) & (y < height)
        depth = rng.uniform(0.45, 0.8)
        ramp = depth + (1 - depth) * np.clip((y - top) / max(0.45 * (bottom - top), 1), 0, 1)
        row_light[y[inside]] = ramp[inside]

    # Brightness, a linear gradient, a vignette and soft shadows, drawn at 1/16 resolution.
    lh, lw = height // 16 + 1, width // 16 + 1
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    yy, xx = yy / (lh - 1) * 2 - 1, xx / (lw - 1) * 2 - 1
    theta = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(0, 0.35)
    low = rng.uniform(0.55, 1.2) * (1 + slope * (np.cos(theta) * xx + np.sin(theta) * yy))
    if rng.random() < 0.5:
        low *= 1 - rng.uniform(0.1, 0.35) * (xx**2 + yy**2) / 2
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.2, 0.7)
        low *= 1 - rng.uniform(0.2, 0.45) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
    canvas *= (_upsample(low, height, width) * row_light[:, None])[:, :, None]
    if rng.random() < 0.3:  # glare from a ceiling light
        cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 0.5), rng.uniform(0.1, 0.3)
        glare = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2) * rng.uniform(30, 90)
        canvas += _upsample(glare, height, width)[:, :, None]
    canvas *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)  # colour cast
    mean = canvas.mean()
    canvas = (canvas - mean) * rng.uniform(0.7, 1.15) + mean  # contrast
    if rng.random() < 0.6:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 1.0))
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(1.0, 6.0)
    return np.clip(canvas, 0, 255).astype(np.uint8)
