"""The embedded image generator: a procedural illustrator with Pillow and NumPy.

It reads the prompt (colours, motifs, time of day, style), plans a scene, paints it in
layers — sky, light, far to near scenery, the subject with its shadow — and finishes it
in the asked-for style. The same prompt, style and seed always give the same picture.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gallery.providers.base import GeneratedImage, ProgressCallback
from gallery.providers.prompt import COLOURS, RGB, PromptReading, describe, read_prompt

Array = Any  # numpy arrays; the float32 canvas is (height, width, 3) in 0..1
Colour = np.ndarray

SKIES: dict[str, tuple[RGB, RGB, RGB]] = {
    # time: (zenith, horizon, ground)
    "day": ((58, 118, 206), (196, 224, 244), (92, 150, 84)),
    "sunset": ((58, 46, 118), (252, 158, 92), (72, 58, 78)),
    "dusk": ((26, 28, 78), (196, 112, 132), (44, 44, 70)),
    "night": ((6, 10, 32), (38, 52, 104), (18, 26, 44)),
}
DEFAULT_COLOURS: dict[str, RGB] = {
    "fox": (226, 112, 40),
    "cat": (66, 62, 78),
    "moon": (244, 238, 218),
    "sun": (255, 214, 120),
    "tree": (40, 112, 64),
    "house": (226, 204, 170),
    "boat": (246, 242, 232),
    "bird": (34, 34, 44),
    "mountain": (92, 104, 150),
    "sea": (30, 84, 140),
    "city": (52, 58, 92),
    "cloud": (250, 246, 250),
}


def _c(rgb: RGB | Colour) -> Colour:
    arr = np.asarray(rgb, dtype=np.float32)
    return arr / 255.0 if arr.max() > 1.0 else arr


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return a * (1.0 - t) + b * t


def _lighten(c: Colour, t: float) -> Colour:
    return _mix(c, np.ones(3, dtype=np.float32), t)


def _darken(c: Colour, t: float) -> Colour:
    return c * (1.0 - t)


def _luma(img: Array) -> Array:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


class Pen:
    """Draws antialiased masks: shapes at twice the size, averaged down."""

    def __init__(self, size: int, scale: int = 2) -> None:
        self.size = size
        self.scale = scale
        self.image = Image.new("L", (size * scale, size * scale), 0)
        self.draw = ImageDraw.Draw(self.image)

    def _p(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * self.scale, y * self.scale) for x, y in points]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: int = 255) -> None:
        s = self.scale
        self.draw.ellipse(((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s), fill=fill)

    def polygon(self, points: list[tuple[float, float]], fill: int = 255) -> None:
        self.draw.polygon(self._p(points), fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: int = 255) -> None:
        s = self.scale
        self.draw.rectangle((x0 * s, y0 * s, x1 * s, y1 * s), fill=fill)

    def line(self, points: list[tuple[float, float]], width: float, fill: int = 255) -> None:
        self.draw.line(self._p(points), fill=fill, width=max(1, round(width * self.scale)))

    def mask(self, blur: float = 0.0) -> Array:
        image = self.image.resize((self.size, self.size), Image.Resampling.BOX)
        if blur > 0:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        return np.asarray(image, dtype=np.float32) / 255.0


def _blur(mask: Array, radius: float) -> Array:
    image = Image.fromarray(np.clip(mask * 255, 0, 255).astype(np.uint8), "L")
    image = image.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.float32) / 255.0


def _blur_rgb(img: Array, radius: float) -> Array:
    image = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.float32) / 255.0


def _shift(mask: Array, dx: int, dy: int) -> Array:
    out = np.zeros_like(mask)
    h, w = mask.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


@dataclass
class Scene:
    """The plan of a picture: what goes where and in which colours, before any paint."""

    reading: PromptReading
    seed: int
    horizon: float
    zenith: Colour
    glow: Colour
    ground: Colour
    colours: dict[str, Colour]
    # Positions as fractions of the canvas: name -> (x, y, size).
    placements: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    facing: int = 1  # +1: the subject looks right

    @property
    def style(self) -> str:
        return self.reading.style

    def has(self, motif: str) -> bool:
        if motif == "sea" and "boat" in self.reading.motifs:
            return True  # a boat always floats
        return motif in self.reading.motifs


def _rng_seed(prompt: str, style: str, seed: int) -> int:
    key = f"{' '.join(prompt.lower().split())}|{style.lower().strip()}|{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def compose(*, prompt: str, style: str = "", seed: int = 0) -> Scene:
    """Plan the picture for a prompt: palette, horizon and where each motif sits."""
    reading = read_prompt(prompt, style)
    rng = np.random.default_rng(_rng_seed(prompt, style, seed))
    zenith, glow, ground = (_c(c) for c in SKIES[reading.time])

    colours: dict[str, Colour] = {m: _c(c) for m, c in DEFAULT_COLOURS.items()}
    for motif, word in reading.motif_colours.items():
        colours[motif] = _c(COLOURS[word])
    if "moon" in reading.motif_colours:  # a coloured moon still shines
        colours["moon"] = _lighten(colours["moon"], 0.45)
    if "sun" in reading.motif_colours:
        colours["sun"] = _lighten(colours["sun"], 0.25)
    if reading.time == "night":
        colours["sea"] = _darken(colours["sea"], 0.55)
        colours["mountain"] = _mix(colours["mountain"], zenith, 0.55)
        colours["city"] = _darken(colours["city"], 0.45)

    # Colour words set the mood of the whole picture: free ones strongly, and colours of
    # the sky's own motifs (a blue moon) tint the sky as well.
    sky_words = list(reading.free_colours) or [
        reading.motif_colours[m]
        for m in ("moon", "sun", "stars", "cloud", "sea")
        if m in reading.motif_colours
    ]
    strength = 0.62 if reading.free_colours else 0.45
    if not sky_words and reading.colours:
        sky_words, strength = list(reading.colours), 0.3
    if sky_words:
        first, last = _c(COLOURS[sky_words[0]]), _c(COLOURS[sky_words[-1]])
        depth = 0.55 if reading.time in ("night", "dusk") else 0.15
        zenith = _mix(zenith, _darken(first, depth), strength)
        glow = _mix(glow, _lighten(last, 0.25 if reading.time != "night" else 0.0), strength)
        if reading.time == "night":
            glow = _darken(glow, 0.35)
        ground = _mix(ground, _darken(last, 0.45), strength * 0.6)
    land_words = [
        reading.motif_colours[m]
        for m in ("mountain", "tree", "flower")
        if m in reading.motif_colours
    ]
    if land_words:
        ground = _mix(ground, _darken(_c(COLOURS[land_words[0]]), 0.3), 0.5)
    if reading.free_colours and "sea" not in reading.motif_colours:
        colours["sea"] = _mix(
            colours["sea"], _darken(_c(COLOURS[reading.free_colours[0]]), 0.3), 0.5
        )
    if "snow" in reading.motifs:
        ground = _mix(ground, _c((236, 242, 252)), 0.75 if reading.time == "day" else 0.45)

    scene = Scene(
        reading=reading,
        seed=seed,
        horizon=float(rng.uniform(0.6, 0.66)),
        zenith=zenith,
        glow=glow,
        ground=ground,
        colours=colours,
        facing=1 if rng.random() < 0.5 else -1,
    )
    subject_x = 0.5 + 0.2 * -scene.facing if reading.subject else 0.5
    celestial = reading.celestial or ("sun" if reading.time == "sunset" else None)
    if celestial:
        side = -1 if subject_x > 0.5 else 1
        cx = (
            0.5 + side * float(rng.uniform(0.12, 0.24))
            if reading.subject
            else float(rng.uniform(0.35, 0.65))
        )
        if celestial == "sun" and reading.time == "sunset":
            scene.placements["sun"] = (cx, scene.horizon - 0.035, 0.12)
        else:
            size = 0.085 if celestial == "moon" else 0.095
            scene.placements[celestial] = (cx, float(rng.uniform(0.18, 0.26)), size)
    if reading.subject:
        scene.placements[reading.subject] = (subject_x, 0.9, 0.34)
    other_side = 1 - subject_x if reading.subject else 0.3
    if "house" in reading.motifs and "house" not in scene.placements:
        scene.placements["house"] = (other_side, 0.86, 0.2)
    if "boat" in reading.motifs and "boat" not in scene.placements:
        scene.placements["boat"] = (other_side if reading.subject != "house" else 0.5, 0.0, 0.2)
    return scene


class Painter:
    """Paints a Scene onto a float canvas, layer by layer, far to near."""

    def __init__(self, scene: Scene, size: int) -> None:
        self.scene = scene
        self.size = size
        self.rng = np.random.default_rng(
            _rng_seed(str(scene.reading.words), scene.style, scene.seed)
        )
        self.canvas: Array = np.zeros((size, size, 3), dtype=np.float32)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.yy, self.xx = yy, xx
        self.hy = scene.horizon * size
        self.light_x = (
            size * (scene.placements.get("moon") or scene.placements.get("sun") or (0.8,))[0]
        )

    # --- primitives -------------------------------------------------------------------
    def paint(self, mask: Array, colour: Colour | Array, opacity: float = 1.0) -> None:
        alpha = np.clip(mask * opacity, 0.0, 1.0)[..., None]
        self.canvas = self.canvas * (1.0 - alpha) + colour * alpha

    def add_light(self, mask: Array, colour: Colour, strength: float) -> None:
        self.canvas = self.canvas + mask[..., None] * colour * strength

    def shade(self, mask: Array, amount: float) -> None:
        self.canvas = self.canvas * (1.0 - np.clip(mask * amount, 0, 1))[..., None]

    def vgrad(self, y0: float, y1: float, top: Colour, bottom: Colour) -> Array:
        t = np.clip((self.yy[:, :1] - y0) / max(1.0, y1 - y0), 0, 1)[..., None]
        return np.broadcast_to(top * (1 - t) + bottom * t, (self.size, self.size, 3))

    def pen(self) -> Pen:
        return Pen(self.size)

    def soft_shadow(self, mask: Array, dx: float, dy: float, blur: float, amount: float) -> None:
        s = self.size
        moved = _shift(mask, round(dx * s), round(dy * s))
        self.shade(_blur(moved, blur * s), amount)

    def rim_light(self, mask: Array, colour: Colour, strength: float) -> None:
        dx = -3 if self.light_x > self.size / 2 else 3
        rim = np.clip(mask - _shift(mask, -dx, 2), 0, 1)
        self.paint(_blur(rim, 1.0), colour, strength)

    # --- layers ------------------------------------------------------------------------
    def sky(self) -> None:
        sc, s = self.scene, self.size
        t = np.clip(self.yy / max(1.0, self.hy), 0, 1) ** 1.4
        sky = sc.zenith * (1 - t[..., None]) + sc.glow * t[..., None]
        self.canvas = sky.astype(np.float32)
        for name in ("sun", "moon"):
            if name in sc.placements:
                cx, cy, r = sc.placements[name]
                d = np.hypot(self.xx - cx * s, self.yy - cy * s) / s
                halo = np.exp(-((d / (r * (3.2 if name == "sun" else 2.6))) ** 2))
                strength = 0.55 if name == "sun" else 0.35
                self.add_light(halo, sc.colours[name], strength)

    def stars(self) -> None:
        sc, s = self.scene, self.size
        count = 260 if sc.has("stars") else 110
        pen = self.pen()
        for _ in range(count):
            x, y = (
                self.rng.uniform(0, s),
                self.rng.uniform(0, self.hy * 0.95) ** 1.15 / (self.hy**0.15),
            )
            r = self.rng.choice([0.5, 0.7, 0.9, 1.3], p=[0.45, 0.3, 0.17, 0.08]) * s / 768
            pen.ellipse(x, y, r, r, fill=int(self.rng.uniform(120, 255)))
        bright = pen.mask()
        sparkle = self.pen()
        for _ in range(14 if sc.has("stars") else 5):
            x, y = self.rng.uniform(0, s), self.rng.uniform(0, self.hy * 0.6)
            arm = self.rng.uniform(5, 11) * s / 768
            sparkle.line([(x - arm, y), (x + arm, y)], 0.8 * s / 768)
            sparkle.line([(x, y - arm), (x, y + arm)], 0.8 * s / 768)
            sparkle.ellipse(x, y, 1.6 * s / 768, 1.6 * s / 768)
        glints = sparkle.mask()
        fade = np.clip(1.0 - self.yy / max(1.0, self.hy), 0, 1) ** 0.6
        tint = _lighten(self.scene.colours.get("stars", _c((255, 250, 235))), 0.6)
        self.add_light((bright + glints + _blur(glints, 3) * 0.8) * fade, tint, 0.95)

    def moon(self) -> None:
        sc, s = self.scene, self.size
        cx, cy, r = (v * s for v in sc.placements["moon"])
        colour = sc.colours["moon"]
        pen = self.pen()
        pen.ellipse(cx, cy, r, r)
        disc = pen.mask()
        self.add_light(_blur(disc, r * 0.35), colour, 0.45)
        d = np.hypot(self.xx - cx + r * 0.35, self.yy - cy + r * 0.35) / r
        face = _mix(colour, _lighten(colour, 0.6), 1.0 - np.clip(d / 1.8, 0, 1)[..., None])
        self.paint(disc, face)
        craters = self.pen()
        for _ in range(7):
            a, dist = self.rng.uniform(0, 2 * math.pi), self.rng.uniform(0.1, 0.7) * r
            cr = self.rng.uniform(0.07, 0.2) * r
            craters.ellipse(cx + math.cos(a) * dist, cy + math.sin(a) * dist, cr, cr)
        self.shade(_blur(craters.mask() * disc, 1.2), 0.1)

    def sun(self) -> None:
        sc, s = self.scene, self.size
        cx, cy, r = (v * s for v in sc.placements["sun"])
        colour = sc.colours["sun"]
        pen = self.pen()
        pen.ellipse(cx, cy, r, r)
        disc = pen.mask()
        if sc.reading.time == "sunset":
            disc = disc * np.clip((self.hy - self.yy) / 2.0, 0, 1)
        self.add_light(_blur(disc, r * 0.5), colour, 0.5)
        self.paint(disc, _lighten(colour, 0.35))

    def clouds(self, count: int) -> None:
        sc, s = self.scene, self.size
        lit = _lighten(sc.colours["cloud"], 0.0)
        if sc.reading.time in ("sunset", "dusk"):
            lit = _mix(lit, sc.glow, 0.5)
        elif sc.reading.time == "night":
            lit = _mix(_c((120, 130, 160)), sc.zenith, 0.4)
        shadow = _mix(lit, sc.zenith, 0.45)
        for _ in range(count):
            cx = self.rng.uniform(0.05, 0.95) * s
            cy = self.rng.uniform(0.1, 0.42) * self.hy + 0.05 * s
            body = sc.placements.get("sun") or sc.placements.get("moon")
            if body and abs(cx / s - body[0]) < 0.2 and abs(cy / s - body[1]) < 0.15:
                cx = ((body[0] + 0.45) % 0.9 + 0.05) * s  # never hide the sun or moon
            width = self.rng.uniform(0.16, 0.3) * s
            pen = self.pen()
            puffs = int(self.rng.integers(5, 9))
            for i in range(puffs):
                t = i / (puffs - 1)
                px = cx - width / 2 + t * width
                pr = width * (0.12 + 0.12 * math.sin(math.pi * t)) * self.rng.uniform(0.8, 1.25)
                pen.ellipse(px, cy - pr * 0.35, pr, pr)
            pen.rect(cx - width, cy + width * 0.04, cx + width, cy + width * 0.5, fill=0)
            mask = pen.mask(blur=1.5)
            self.soft_shadow(mask, 0.0, 0.012, 0.01, 0.12)
            self.paint(mask, self.vgrad(cy - width * 0.3, cy + width * 0.05, lit, shadow), 0.92)

    def birds(self) -> None:
        sc, s = self.scene, self.size
        colour = sc.colours["bird"] if sc.reading.time == "day" else _darken(sc.zenith, 0.5)
        pen = self.pen()
        fx, fy = self.rng.uniform(0.25, 0.75) * s, self.rng.uniform(0.14, 0.3) * s
        for _ in range(int(self.rng.integers(4, 8))):
            x, y = fx + self.rng.normal(0, 0.1) * s, fy + self.rng.normal(0, 0.05) * s
            w = self.rng.uniform(0.012, 0.026) * s
            lift = self.rng.uniform(0.3, 0.6) * w
            pen.line([(x - w, y - lift), (x - w * 0.45, y - lift * 1.2), (x, y)], w * 0.14)
            pen.line([(x, y), (x + w * 0.45, y - lift * 1.2), (x + w, y - lift)], w * 0.14)
        self.paint(pen.mask(), colour, 0.9)

    def _ridge(self, rough: float, base: float, height: float) -> Array:
        """A mountain skyline by midpoint displacement: a few peaks, ever finer detail."""
        s = self.size
        points = self.rng.uniform(0.15, 1.0, 4).astype(np.float32)
        points[int(self.rng.integers(1, 3))] = 1.0
        amp = 0.3
        while len(points) < s // 2:
            mids = (points[:-1] + points[1:]) / 2 + self.rng.normal(0, amp, len(points) - 1)
            merged = np.empty(len(points) * 2 - 1, dtype=np.float32)
            merged[0::2], merged[1::2] = points, mids
            points, amp = merged, amp * rough
        ridge = np.interp(np.linspace(0, len(points) - 1, s), np.arange(len(points)), points)
        ridge = (ridge - ridge.min()) / max(1e-6, float(ridge.max() - ridge.min()))
        return (base - height * ridge).astype(np.float32)

    def mountains(self) -> None:
        sc, s = self.scene, self.size
        base = _mix(sc.colours["mountain"], sc.ground, 0.2)
        snowy = sc.has("snow")
        ranges = 3
        for i in range(ranges):
            depth = 1 - i / ranges  # 1 = far
            height = (0.3 - 0.07 * i) * s
            tops = self._ridge(0.5, self.hy + 2, height)
            edge = np.clip(self.yy - tops[None, :] + 0.5, 0, 1)
            colour = _mix(base, sc.glow, 0.6 * depth - 0.1)
            shade = np.clip((self.yy - tops[None, :]) / (0.25 * s), 0, 1)[..., None]
            fill = _mix(_lighten(colour, 0.08), _mix(colour, sc.glow, 0.25), shade)
            self.soft_shadow(edge, 0, -0.004, 0.006, 0.15 * (1 - depth))
            self.paint(edge, fill)
            if snowy or i == 0:
                snowline = self.hy - (0.62 if not snowy else 0.45) * height
                cap = edge * np.clip((snowline - self.yy) / (0.012 * s) + 0.5, 0, 1)
                snow_colour = _mix(_c((244, 248, 255)), sc.glow, 0.3 * depth)
                self.paint(
                    cap,
                    self.vgrad(
                        snowline - height * 0.5,
                        snowline,
                        snow_colour,
                        _mix(snow_colour, colour, 0.3),
                    ),
                    0.92,
                )

    def sea(self) -> None:
        sc, s = self.scene, self.size
        deep = sc.colours["sea"]
        near = _mix(deep, sc.glow, 0.45)
        water = (self.yy >= self.hy).astype(np.float32)
        self.paint(water, self.vgrad(self.hy, s, near, _darken(deep, 0.25)))
        pen = self.pen()
        for _ in range(90):
            y = self.rng.uniform(self.hy + 3, s)
            depth = (y - self.hy) / (s - self.hy)
            w = self.rng.uniform(0.02, 0.09) * s * (0.4 + depth)
            x = self.rng.uniform(-0.05, 1.05) * s
            pen.line([(x - w / 2, y), (x + w / 2, y)], 0.6 + 1.6 * depth)
        self.add_light(pen.mask() * water, _lighten(sc.glow, 0.3), 0.16)
        body = next((n for n in ("moon", "sun") if n in sc.placements), None)
        if body:
            cx = sc.placements[body][0] * s
            glitter = self.pen()
            for _ in range(70):
                y = self.rng.uniform(self.hy + 2, s)
                depth = (y - self.hy) / (s - self.hy)
                spread = (0.04 + 0.12 * depth) * s
                x = cx + self.rng.normal(0, 0.45) * spread
                w = self.rng.uniform(0.3, 1.0) * spread * 0.5
                glitter.line([(x - w / 2, y), (x + w / 2, y)], 1.0 + 2.0 * depth)
            self.add_light(_blur(glitter.mask(), 0.8) * water, sc.colours[body], 0.75)

    def land(self) -> None:
        sc, s = self.scene, self.size
        far = _mix(sc.ground, sc.glow, 0.35)
        x = np.linspace(0, 1, s, dtype=np.float32)[None, :]
        phase = self.rng.uniform(0, 6.28)
        hill = self.hy + 0.02 * s * np.sin(3.1 * x * math.pi + phase) + 0.012 * s
        edge = np.clip(self.yy - hill + 0.5, 0, 1)
        self.paint(edge, self.vgrad(self.hy, s, far, _darken(sc.ground, 0.35)))
        phase = self.rng.uniform(0, 6.28)
        near = self.hy + 0.09 * s + 0.035 * s * np.sin(2.0 * x * math.pi + phase)
        edge = np.clip(self.yy - near + 0.5, 0, 1)
        self.soft_shadow(edge, 0, -0.006, 0.012, 0.18)
        self.paint(edge, self.vgrad(self.hy + 0.06 * s, s, sc.ground, _darken(sc.ground, 0.45)))

    def shore(self) -> None:
        """A strip of land in front of the water for the subject to stand on."""
        sc, s = self.scene, self.size
        x = np.linspace(0, 1, s, dtype=np.float32)[None, :]
        stand = next((m for m in ("fox", "cat", "house") if m in sc.placements), None)
        subject_x = sc.placements[stand][0] if stand else 0.5
        rise = np.exp(-(((x - subject_x) / 0.35) ** 2))
        top = s * (0.93 - 0.09 * rise)
        edge = np.clip(self.yy - top + 0.5, 0, 1)
        self.soft_shadow(edge, 0, -0.006, 0.01, 0.25)
        land = sc.ground if sc.has("snow") else _mix(sc.ground, _c((70, 60, 50)), 0.3)
        self.paint(edge, self.vgrad(s * 0.8, s, land, _darken(land, 0.45)))

    def city(self) -> None:
        sc, s = self.scene, self.size
        night = sc.reading.time in ("night", "dusk")
        body = sc.colours["city"]
        for layer in range(2):
            pen, windows = self.pen(), self.pen()
            x = -self.rng.uniform(0, 0.04) * s
            far = layer == 0
            while x < s:
                w = self.rng.uniform(0.035, 0.075) * s
                h = self.rng.uniform(0.1, 0.3 if far else 0.22) * s
                top = self.hy - h + (0 if far else 0.01 * s)
                pen.rect(x, top, x + w, self.hy + 0.02 * s)
                if self.rng.random() < 0.25:
                    pen.rect(x + w * 0.45, top - 0.03 * s, x + w * 0.55, top)
                for wy in np.arange(top + 0.012 * s, self.hy - 0.01 * s, 0.018 * s):
                    for wx in np.arange(x + 0.008 * s, x + w - 0.012 * s, 0.014 * s):
                        if self.rng.random() < (0.45 if night else 0.3):
                            windows.rect(wx, wy, wx + 0.006 * s, wy + 0.008 * s)
                x += w + self.rng.uniform(0.0, 0.015) * s
            mask = pen.mask()
            colour = _mix(body, sc.glow, 0.45 if far else 0.08)
            self.paint(mask, self.vgrad(self.hy - 0.3 * s, self.hy, _lighten(colour, 0.1), colour))
            lamp = _c((255, 214, 120)) if night else _lighten(colour, 0.35)
            win = windows.mask() * mask
            if night:
                self.add_light(_blur(win, 2.5), lamp, 0.5)
            self.paint(win, lamp, 0.85 if night else 0.5)

    def trees(self, count: int, *, near: bool) -> None:
        sc, s = self.scene, self.size
        conifer = sc.has("snow") or sc.has("mountain") or sc.reading.time == "night"
        green = sc.colours["tree"]
        if sc.reading.time == "night":
            green = _mix(green, sc.zenith, 0.6)
        subject_x = sc.placements.get(sc.reading.subject or "", (None,))[0]
        pen, snow = self.pen(), self.pen()
        for _ in range(count):
            x = self.rng.uniform(0.02, 0.98) * s
            if subject_x is not None and abs(x / s - subject_x) < 0.16:
                x = ((subject_x + 0.5) % 1.0) * s
            base = (
                self.hy
                + (self.rng.uniform(0.06, 0.12) if near else self.rng.uniform(0.0, 0.03)) * s
            )
            h = (self.rng.uniform(0.16, 0.26) if near else self.rng.uniform(0.06, 0.1)) * s
            pen.rect(x - h * 0.03, base - h * 0.2, x + h * 0.03, base)
            if conifer:
                for tier in range(3):
                    ty = base - h * (0.15 + tier * 0.27)
                    half = h * (0.26 - tier * 0.06)
                    pen.polygon([(x - half, ty), (x + half, ty), (x, ty - h * 0.42)])
                    if sc.has("snow"):
                        snow.polygon(
                            [
                                (x - half * 0.6, ty - h * 0.17),
                                (x + half * 0.5, ty - h * 0.19),
                                (x, ty - h * 0.42),
                            ]
                        )
            else:
                for _ in range(5):
                    ox, oy = self.rng.normal(0, 0.12) * h, self.rng.normal(0, 0.08) * h
                    r = self.rng.uniform(0.16, 0.24) * h
                    pen.ellipse(x + ox, base - h * 0.62 + oy, r, r)
        mask = pen.mask()
        if near:
            self.soft_shadow(mask, 0.006 if self.light_x < s / 2 else -0.006, 0.004, 0.006, 0.3)
        colour = green if near else _mix(green, sc.glow, 0.35)
        self.paint(
            mask,
            self.vgrad(
                self.hy - 0.26 * s, self.hy + 0.1 * s, _lighten(colour, 0.15), _darken(colour, 0.3)
            ),
        )
        if sc.has("snow"):
            self.paint(snow.mask() * mask, _c((240, 246, 255)), 0.85)

    def house(self) -> None:
        sc, s = self.scene, self.size
        x, y, size = sc.placements["house"]
        if sc.has("sea"):
            y = max(y, 0.88)
        cx, base, h = x * s, y * s, size * s * 0.8
        w = h * 0.9
        body, roof, door, win, chimney = (self.pen() for _ in range(5))
        body.rect(cx - w / 2, base - h * 0.6, cx + w / 2, base)
        roof.polygon(
            [
                (cx - w * 0.62, base - h * 0.58),
                (cx + w * 0.62, base - h * 0.58),
                (cx, base - h * 1.05),
            ]
        )
        chimney.rect(cx + w * 0.2, base - h * 0.98, cx + w * 0.32, base - h * 0.7)
        door.rect(cx - w * 0.1, base - h * 0.32, cx + w * 0.1, base)
        win.rect(cx - w * 0.38, base - h * 0.45, cx - w * 0.18, base - h * 0.28)
        win.rect(cx + w * 0.18, base - h * 0.45, cx + w * 0.38, base - h * 0.28)
        whole = np.clip(body.mask() + roof.mask() + chimney.mask(), 0, 1)
        ground_shadow = self.pen()
        ground_shadow.ellipse(cx, base, w * 0.75, h * 0.06)
        self.shade(ground_shadow.mask(blur=6), 0.4)
        self.soft_shadow(whole, 0.008, 0.004, 0.006, 0.25)
        wall = sc.colours["house"]
        if sc.reading.time == "night":
            wall = _mix(wall, sc.zenith, 0.55)
        roof_colour = _mix(_c((170, 60, 50)), sc.zenith, 0.4 if sc.reading.time == "night" else 0.0)
        self.paint(chimney.mask(), _darken(roof_colour, 0.2))
        self.paint(body.mask(), self.vgrad(base - h * 0.6, base, wall, _darken(wall, 0.25)))
        self.paint(
            roof.mask(),
            self.vgrad(
                base - h, base - h * 0.58, _lighten(roof_colour, 0.1), _darken(roof_colour, 0.25)
            ),
        )
        if sc.has("snow"):
            cap = self.pen()
            cap.polygon(
                [
                    (cx - w * 0.64, base - h * 0.56),
                    (cx + w * 0.64, base - h * 0.56),
                    (cx + w * 0.5, base - h * 0.66),
                    (cx, base - h * 1.07),
                    (cx - w * 0.5, base - h * 0.66),
                ]
            )
            self.paint(
                cap.mask() * (1 - _shift(roof.mask(), 0, round(h * 0.05))), _c((245, 248, 255))
            )
        self.paint(door.mask(), _darken(wall, 0.6))
        lit = sc.reading.time in ("night", "dusk", "sunset")
        light = _c((255, 206, 110)) if lit else _c((150, 190, 220))
        if lit:
            self.add_light(_blur(win.mask(), h * 0.12), light, 0.6)
        self.paint(win.mask(), light)

    def boat(self) -> None:
        sc, s = self.scene, self.size
        x = sc.placements["boat"][0]
        cx, wl, h = x * s, self.hy + 0.07 * s, 0.2 * s
        hull, sail, mast = self.pen(), self.pen(), self.pen()
        hull.polygon(
            [
                (cx - h * 0.5, wl - h * 0.1),
                (cx + h * 0.55, wl - h * 0.1),
                (cx + h * 0.38, wl + h * 0.04),
                (cx - h * 0.38, wl + h * 0.04),
            ]
        )
        mast.rect(cx - h * 0.012, wl - h * 0.95, cx + h * 0.012, wl - h * 0.1)
        sail.polygon(
            [
                (cx + h * 0.03, wl - h * 0.92),
                (cx + h * 0.42, wl - h * 0.16),
                (cx + h * 0.03, wl - h * 0.16),
            ]
        )
        sail.polygon(
            [
                (cx - h * 0.03, wl - h * 0.8),
                (cx - h * 0.03, wl - h * 0.18),
                (cx - h * 0.3, wl - h * 0.18),
            ]
        )
        whole = np.clip(hull.mask() + sail.mask() + mast.mask(), 0, 1)
        reflection = np.flipud(_shift(np.flipud(whole), 0, 0))
        offset = round(2 * wl - s)
        reflection = _shift(reflection, 0, offset) * (self.yy > wl)
        self.paint(_blur(reflection, 2.5), _darken(sc.colours["sea"], 0.35), 0.35)
        night = sc.reading.time == "night"
        hull_colour = _c((92, 52, 40)) if not night else _c((30, 24, 30))
        sail_colour = sc.colours["boat"] if not night else _mix(sc.colours["boat"], sc.zenith, 0.5)
        self.paint(mast.mask(), _darken(hull_colour, 0.3))
        self.paint(sail.mask(), self.vgrad(wl - h, wl, sail_colour, _darken(sail_colour, 0.2)))
        self.paint(hull.mask(), hull_colour)
        self.rim_light(whole, _lighten(sc.glow, 0.4), 0.5)

    def flowers(self) -> None:
        sc, s = self.scene, self.size
        bound = sc.reading.motif_colours.get("flower")
        palette = (
            [_c(COLOURS[bound])]
            if bound
            else [_c(COLOURS[w]) for w in (*sc.reading.free_colours, "pink", "yellow", "white")][:3]
        )
        stem_colour = _mix(_c((46, 110, 50)), sc.zenith, 0.5 if sc.reading.time == "night" else 0)
        stems = self.pen()
        heads: list[tuple[float, float, float, int]] = []
        for _ in range(26):
            x = self.rng.uniform(0.0, 1.0) * s
            base = s * self.rng.uniform(0.93, 1.02)
            depth = (base / s - 0.9) / 0.12
            h = (0.06 + 0.07 * depth) * s
            top = (x + self.rng.normal(0, 0.01) * s, base - h)
            stems.line([(x, base), top], 1.2 + 1.5 * depth)
            heads.append(
                (top[0], top[1], (0.01 + 0.012 * depth) * s, int(self.rng.integers(len(palette))))
            )
        self.paint(stems.mask(), stem_colour)
        for index, colour in enumerate(palette):
            petals, centres = self.pen(), self.pen()
            for hx, hy, r, which in heads:
                if which != index:
                    continue
                for k in range(5):
                    a = k * 2 * math.pi / 5
                    petals.ellipse(hx + math.cos(a) * r, hy + math.sin(a) * r, r * 0.75, r * 0.75)
                centres.ellipse(hx, hy, r * 0.45, r * 0.45)
            mask = petals.mask()
            self.soft_shadow(mask, 0.002, 0.003, 0.003, 0.3)
            tint = colour if sc.reading.time != "night" else _mix(colour, sc.zenith, 0.35)
            self.paint(mask, tint)
            self.paint(
                centres.mask(), _c((250, 200, 60)) if bound != "yellow" else _c((120, 70, 20))
            )

    def animal(self, kind: str) -> None:
        sc, s = self.scene, self.size
        x, y, size = sc.placements[kind]
        f = sc.facing
        bx, by, h = x * s, y * s, size * s
        fur = sc.colours[kind]
        fox = kind == "fox"
        body, light_fur, dark, eyes, tail = (self.pen() for _ in range(5))
        # Sitting body: haunch at the back, chest rising to the neck.
        body.ellipse(bx - f * h * 0.08, by - h * 0.26, h * 0.24, h * 0.26)
        body.polygon(
            [
                (bx - f * h * 0.2, by - h * 0.3),
                (bx + f * h * 0.16, by - h * 0.05),
                (bx + f * h * 0.2, by - h * 0.55),
                (bx + f * h * 0.02, by - h * 0.7),
                (bx - f * h * 0.14, by - h * 0.45),
            ]
        )
        for leg in (0.07, 0.16):
            body.rect(bx + f * h * leg - h * 0.035, by - h * 0.3, bx + f * h * leg + h * 0.035, by)
            body.ellipse(bx + f * h * (leg + 0.02), by - h * 0.01, h * 0.05, h * 0.025)
        hx, hy = bx + f * h * 0.1, by - h * 0.76
        head_r = h * (0.13 if fox else 0.145)
        body.ellipse(hx, hy, head_r, head_r * (0.92 if fox else 0.88))
        ear_h = h * (0.2 if fox else 0.13)
        for off in (-0.55, 0.5):
            ex = hx + off * head_r
            body.polygon(
                [
                    (ex - head_r * 0.42, hy - head_r * 0.45),
                    (ex + head_r * 0.42, hy - head_r * 0.45),
                    (ex + f * head_r * 0.08, hy - head_r * 0.45 - ear_h),
                ]
            )
            dark.polygon(
                [
                    (ex - head_r * 0.2, hy - head_r * 0.55),
                    (ex + head_r * 0.2, hy - head_r * 0.55),
                    (ex + f * head_r * 0.06, hy - head_r * 0.3 - ear_h * 0.85),
                ]
            )
        if fox:
            body.polygon(
                [
                    (hx + f * head_r * 0.3, hy - head_r * 0.35),
                    (hx + f * head_r * 0.3, hy + head_r * 0.55),
                    (hx + f * head_r * 1.9, hy + head_r * 0.25),
                ]
            )
            light_fur.polygon(
                [
                    (hx + f * head_r * 0.1, hy + head_r * 0.15),
                    (hx + f * head_r * 1.85, hy + head_r * 0.28),
                    (hx + f * head_r * 0.3, hy + head_r * 0.75),
                ]
            )
            dark.ellipse(hx + f * head_r * 1.85, hy + head_r * 0.22, head_r * 0.14, head_r * 0.12)
            light_fur.polygon(
                [
                    (bx + f * h * 0.05, by - h * 0.62),
                    (bx + f * h * 0.22, by - h * 0.5),
                    (bx + f * h * 0.14, by - h * 0.2),
                    (bx + f * h * 0.03, by - h * 0.35),
                ]
            )
            for leg in (0.07, 0.16):
                dark.rect(
                    bx + f * h * leg - h * 0.036,
                    by - h * 0.09,
                    bx + f * h * leg + h * 0.036,
                    by + h * 0.02,
                )
            # A bushy tail wrapped forward around the feet, with a pale tip.
            for i in range(40):
                t = i / 39
                px = bx - f * h * (0.3 - 0.62 * t)
                py = by - h * (0.16 * math.sin(math.pi * (0.15 + 0.85 * t)) * (1 - t) + 0.035)
                width = h * (0.05 + 0.075 * math.sin(math.pi * min(1.0, 0.2 + t)))
                tail.ellipse(px, py, width * 1.25, width)
                if t > 0.82:
                    light_fur.ellipse(px + f * width * 0.2, py, width * 1.2, width * 0.95)
        else:
            for i in range(36):
                t = i / 35
                px = bx - f * h * (0.22 + 0.2 * math.sin(t * math.pi * 0.5))
                py = by - h * 0.03 - h * 0.34 * (t**2.2)
                tail.ellipse(px, py, h * 0.038, h * 0.038)
            light_fur.ellipse(
                hx + f * head_r * 0.35, hy + head_r * 0.45, head_r * 0.38, head_r * 0.26
            )
        eye_x = hx + f * head_r * (0.55 if fox else 0.35)
        for dx in (0.0,) if fox else (-0.32, 0.32):
            ex = eye_x + dx * head_r
            eyes.ellipse(
                ex,
                hy - head_r * 0.12,
                head_r * (0.1 if fox else 0.14),
                head_r * (0.08 if fox else 0.12),
            )
        whole = np.clip(body.mask() + tail.mask(), 0, 1)
        ground_shadow = self.pen()
        ground_shadow.ellipse(bx - f * h * 0.1, by + h * 0.005, h * 0.42, h * 0.05)
        self.shade(ground_shadow.mask(blur=h * 0.04), 0.45)
        night = sc.reading.time == "night"
        top, bottom = _lighten(fur, 0.12), _darken(fur, 0.3)
        if night:
            top, bottom = _mix(top, sc.zenith, 0.25), _mix(bottom, sc.zenith, 0.4)
        self.soft_shadow(whole, 0.006 * f, 0.003, 0.006, 0.25)
        fill = self.vgrad(by - h, by, top, bottom)
        self.paint(whole, fill)
        self.paint(tail.mask(), _darken(fur, 0.12), 0.4)
        cream = _mix(_c((250, 240, 226)), fur, 0.12) if fox else _lighten(fur, 0.35)
        if night:
            cream = _mix(cream, sc.zenith, 0.25)
        self.paint(light_fur.mask() * np.clip(whole * 4, 0, 1), cream, 0.95)
        self.paint(dark.mask() * whole * (1 - tail.mask()), _darken(fur, 0.65), 0.9)
        rim = self.scene.colours.get(self.scene.reading.celestial or "", _lighten(sc.glow, 0.3))
        self.rim_light(whole, _lighten(rim, 0.3), 0.6 if night else 0.35)
        eye_colour = _c((250, 220, 90)) if not fox and night else _c((24, 18, 16))
        self.paint(eyes.mask(), eye_colour)

    def snowfall(self) -> None:
        s = self.size
        pen = self.pen()
        for _ in range(420):
            r = self.rng.choice([0.8, 1.3, 2.0, 2.8], p=[0.45, 0.3, 0.17, 0.08]) * s / 768
            pen.ellipse(
                self.rng.uniform(0, s),
                self.rng.uniform(0, s),
                r,
                r,
                fill=int(self.rng.uniform(150, 255)),
            )
        self.paint(pen.mask(blur=0.6), _c((250, 252, 255)), 0.85)

    def finish(self) -> None:
        """Bloom, vignette and a fine grain, so flat fills read as a printed picture."""
        s = self.size
        bright = np.clip(_luma(self.canvas) - 0.7, 0, 1)
        self.canvas = self.canvas + _blur_rgb(self.canvas * bright[..., None], s * 0.02) * 0.5
        d = np.hypot(self.xx / s - 0.5, self.yy / s - 0.5)
        self.canvas = self.canvas * (1 - 0.35 * np.clip(d - 0.3, 0, 1) ** 1.5)[..., None]
        self.canvas = self.canvas + self.rng.normal(0, 0.012, (s, s, 1)).astype(np.float32)


# --- styles -------------------------------------------------------------------------


def _to_image(canvas: Array) -> Image.Image:
    return Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _from_image(image: Image.Image) -> Array:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    small = rng.random((cells, cells)).astype(np.float32)
    image = Image.fromarray((small * 255).astype(np.uint8), "L").resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return np.asarray(image, dtype=np.float32) / 255.0


def _watercolour(canvas: Array, rng: np.random.Generator) -> Array:
    s = canvas.shape[0]
    # Wobble the edges as if the pigment flowed: sample from a gently displaced grid.
    dx = ((_smooth_noise(rng, s, 12) - 0.5) * s * 0.012).astype(np.int32)
    dy = ((_smooth_noise(rng, s, 12) - 0.5) * s * 0.012).astype(np.int32)
    yy, xx = np.mgrid[0:s, 0:s]
    img = canvas[np.clip(yy + dy, 0, s - 1), np.clip(xx + dx, 0, s - 1)]
    img = _blur_rgb(img, s * 0.002)
    soft = _blur_rgb(img, s * 0.006)
    edges = np.clip(np.abs(_luma(img) - _luma(soft)) * 3.0, 0, 1)
    img = img * (1 - 0.35 * edges[..., None])
    bloom = (_smooth_noise(rng, s, 9) - 0.5) * 0.16 + (_smooth_noise(rng, s, 30) - 0.5) * 0.08
    img = img * (1 + bloom[..., None])
    img = 1 - (1 - img) * 0.82  # thinned pigment lets the paper through
    paper = _blur(rng.random((s, s)).astype(np.float32), 0.7)
    img = img * (0.93 + 0.07 * paper[..., None])
    return img * np.array([1.0, 0.99, 0.96], dtype=np.float32)


def _neon(canvas: Array, scene: Scene, rng: np.random.Generator) -> Array:
    s = canvas.shape[0]
    image = _to_image(_blur_rgb(canvas, 1.2)).quantize(colors=12, dither=Image.Dither.NONE)
    image = image.convert("RGB").filter(ImageFilter.ModeFilter(5))
    edges = np.asarray(image.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    edges = np.clip(edges * 4.0, 0, 1)
    edges[:2, :], edges[-2:, :], edges[:, :2], edges[:, -2:] = 0, 0, 0, 0  # filter border
    words = list(scene.reading.colours) or ["magenta", "cyan"]
    if len(words) == 1:
        words.append("cyan" if words[0] != "cyan" else "magenta")
    a, b = _c(COLOURS[words[0]]), _c(COLOURS[words[1]])
    a, b = a / max(0.01, float(a.max())), b / max(0.01, float(b.max()))
    yy = np.mgrid[0:s, 0:1][0].astype(np.float32) / s
    hue = a * (1 - yy[..., None]) + b * yy[..., None]
    base = _from_image(image)
    dark = base * 0.22 + _c((12, 4, 30)) * 0.8
    hy = int(scene.horizon * s)
    grid = np.zeros((s, s), dtype=np.float32)
    for i in range(1, 14):  # a receding floor grid under the horizon
        y = hy + (s - hy) * (i / 13) ** 2
        if y < s:
            grid[int(y) : int(y) + max(1, s // 500) + 1, :] = 0.8
    for k in range(-12, 13):
        for y in range(hy, s):
            x = int(s / 2 + k * (y - hy) * 0.5 + k * 2)
            if 0 <= x < s:
                grid[y, x : x + 2] = 0.8
    lines = np.clip(edges + grid * 0.6, 0, 1)
    glow = _blur(lines, s * 0.006) * 1.6 + _blur(lines, s * 0.02) * 1.2
    out = dark + hue * (lines[..., None] * 0.9 + glow[..., None] * 0.6)
    return out + rng.normal(0, 0.01, (s, s, 1)).astype(np.float32)


def _pixel(canvas: Array) -> Array:
    s = canvas.shape[0]
    cells = max(32, s // 7)
    small = _to_image(canvas).resize((cells, cells), Image.Resampling.BOX)
    small = small.quantize(colors=24, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return _from_image(small.convert("RGB").resize((s, s), Image.Resampling.NEAREST))


def _minimal(canvas: Array) -> Array:
    image = _to_image(_blur_rgb(canvas, canvas.shape[0] * 0.004))
    image = image.quantize(colors=7, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image = image.convert("RGB").filter(ImageFilter.ModeFilter(7))
    return _from_image(image)


def _sketch(canvas: Array, rng: np.random.Generator) -> Array:
    s = canvas.shape[0]
    grey = _luma(canvas)
    inverse = _blur(1 - grey, s * 0.008)
    pencil = np.clip(grey / np.maximum(1e-3, 1 - inverse * 0.98), 0, 1) ** 2.2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    hatch = (np.sin((xx + yy) * (2 * math.pi / max(4.0, s / 128))) > 0.55).astype(np.float32)
    hatch = hatch * np.clip(0.55 - grey, 0, 1) * 1.4
    tone = np.clip(pencil - hatch * 0.35, 0, 1)
    paper = 0.96 + 0.04 * _blur(rng.random((s, s)).astype(np.float32), 0.8)
    tint = _mix(np.ones_like(canvas), canvas, 0.18)
    return tone[..., None] * paper[..., None] * tint * _c((250, 246, 238))


# --- the provider -------------------------------------------------------------------


def render(scene: Scene, *, size: int, progress: ProgressCallback | None = None) -> Image.Image:
    """Paint a planned scene at `size`×`size` pixels."""
    report: Callable[[int], None] = progress or (lambda _n: None)
    painter = Painter(scene, size)
    reading = scene.reading
    painter.sky()
    if reading.time in ("night", "dusk") or scene.has("stars"):
        painter.stars()
    if "sun" in scene.placements:
        painter.sun()
    if "moon" in scene.placements:
        painter.moon()
    report(15)
    if scene.has("cloud"):
        painter.clouds(4)
    elif reading.time == "day" and not scene.has("stars"):
        painter.clouds(2)
    if scene.has("mountain"):
        painter.mountains()
    report(35)
    if scene.has("sea"):
        painter.sea()
    else:
        painter.land()
    if scene.has("city"):
        painter.city()
    if scene.has("bird"):
        painter.birds()
    report(55)
    if scene.has("boat"):
        painter.boat()
    if scene.has("sea") and any(scene.has(m) for m in ("fox", "cat", "house", "tree", "flower")):
        painter.shore()
    if scene.has("tree"):
        painter.trees(9, near=False)
        painter.trees(3 if reading.subject != "tree" else 5, near=True)
    if scene.has("house"):
        painter.house()
    if scene.has("flower"):
        painter.flowers()
    for kind in ("fox", "cat"):
        if kind in scene.placements:
            painter.animal(kind)
    if scene.has("snow"):
        painter.snowfall()
    report(75)
    if scene.style not in ("pixel", "minimal", "neon"):
        painter.finish()
    canvas = np.clip(painter.canvas, 0, 1)
    rng = np.random.default_rng(_rng_seed(" ".join(reading.words), "finish", scene.seed))
    if scene.style == "watercolour":
        canvas = _watercolour(canvas, rng)
    elif scene.style == "neon":
        canvas = _neon(canvas, scene, rng)
    elif scene.style == "pixel":
        canvas = _pixel(canvas)
    elif scene.style == "minimal":
        canvas = _minimal(canvas)
    elif scene.style == "sketch":
        canvas = _sketch(canvas, rng)
    report(90)
    return _to_image(canvas)


class LocalProvider:
    """Procedural illustrations, offline, deterministic per prompt, style and seed."""

    name = "local"

    def generate(
        self,
        *,
        prompt: str,
        style: str,
        seed: int,
        size: int,
        progress: ProgressCallback,
    ) -> GeneratedImage:
        scene = compose(prompt=prompt, style=style, seed=seed)
        image = render(scene, size=size, progress=progress)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=False)
        title, description = describe(scene.reading, prompt)
        progress(100)
        return GeneratedImage(
            png=buffer.getvalue(),
            width=image.width,
            height=image.height,
            title=title,
            description=description,
        )
