"""The offline generator: deterministic, and its pictures visibly follow the prompt."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gallery.providers import get_provider
from gallery.providers.local import LocalProvider, compose, render
from gallery.providers.prompt import describe_prompt, read_prompt

SIZE = 256


def pixels(prompt: str, style: str = "", seed: int = 1, size: int = SIZE) -> np.ndarray:
    image = render(compose(prompt=prompt, style=style, seed=seed), size=size)
    return np.asarray(image, dtype=np.float32)


def share(mask: np.ndarray) -> float:
    return float(mask.mean())


def reddish(px: np.ndarray) -> np.ndarray:
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (r > g + 50) & (r > b + 40)


def bluish(px: np.ndarray) -> np.ndarray:
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (b > r + 25) & (b > g + 5)


def disc_stats(px: np.ndarray, cx: float, cy: float, r: float) -> tuple[float, float]:
    """Mean brightness inside a disc and in a ring just outside it."""
    luma = px @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    yy, xx = np.mgrid[0 : px.shape[0], 0 : px.shape[1]]
    d = np.hypot(xx - cx, yy - cy)
    return float(luma[d < r * 0.8].mean()), float(luma[(d > r * 1.6) & (d < r * 2.4)].mean())


def test_same_prompt_and_seed_give_the_same_png_and_another_seed_does_not() -> None:
    provider = LocalProvider()

    def make(seed: int) -> bytes:
        return provider.generate(
            prompt="a cat under the moon", style="", seed=seed, size=SIZE, progress=lambda n: None
        ).png

    assert make(5) == make(5)
    assert make(5) != make(6)


def test_generate_returns_a_png_of_the_size_asked_and_reports_progress() -> None:
    seen: list[int] = []
    result = get_provider("local").generate(
        prompt="a fox in a forest", style="", seed=2, size=200, progress=seen.append
    )
    picture = Image.open(io.BytesIO(result.png))
    assert picture.format == "PNG"
    assert picture.size == (200, 200) == (result.width, result.height)
    assert len(seen) >= 4
    assert seen == sorted(seen)
    assert seen[-1] == 100


def test_red_fox_under_blue_moon_shows_red_blue_a_moon_and_a_fox() -> None:
    scene = compose(prompt="a red fox under a blue moon", seed=3)
    px = np.asarray(render(scene, size=SIZE), dtype=np.float32)
    assert share(reddish(px)) > 0.02
    assert share(bluish(px)) > 0.3

    cx, cy, r = (v * SIZE for v in scene.placements["moon"])
    inside, ring = disc_stats(px, cx, cy, r)
    assert inside > ring + 80, "the moon is a bright disc against the sky"

    fx, fy, fh = (v * SIZE for v in scene.placements["fox"])
    body = px[int(fy - fh * 0.7) : int(fy), int(fx - fh * 0.3) : int(fx + fh * 0.3)]
    assert share(reddish(body)) > 0.25, "the fox stands where it was placed, in red"


def test_without_a_moon_that_place_is_plain_sky_and_without_a_fox_nothing_red() -> None:
    scene = compose(prompt="a red fox under a blue moon", seed=3)
    cx, cy, r = (v * SIZE for v in scene.placements["moon"])
    inside, ring = disc_stats(pixels("a quiet blue night", seed=3), cx, cy, r)
    assert abs(inside - ring) < 25
    assert share(reddish(pixels("a cat under a blue moon", seed=3))) < 0.002


@pytest.mark.parametrize(
    ("colour", "contrast", "channel"),
    [("red", "green", 0), ("green", "red", 1), ("blue", "orange", 2), ("orange", "blue", 0)],
)
def test_a_colour_word_dominates_the_palette(colour: str, contrast: str, channel: int) -> None:
    means = pixels(f"a {colour} landscape with hills").mean(axis=(0, 1))
    other = pixels(f"a {contrast} landscape with hills").mean(axis=(0, 1))
    assert means[channel] > other[channel] + 15
    assert means[channel] == means.max()


MOTIFS = [
    "sun",
    "moon",
    "mountains",
    "sea",
    "trees",
    "city",
    "cat",
    "fox",
    "flowers",
    "stars",
    "snow",
    "birds",
    "house",
    "boat",
    "clouds",
]


@pytest.mark.parametrize("motif", MOTIFS)
def test_each_named_motif_is_drawn(motif: str) -> None:
    base = "a landscape at night" if motif == "stars" else "a landscape"
    plain = pixels(base, seed=4)
    with_motif = pixels(f"{base} with {motif}", seed=4)
    assert len(read_prompt(f"{base} with {motif}").motifs) == 1
    changed = np.abs(with_motif - plain).max(axis=2) > 40
    assert share(changed) > 0.003, f"{motif} left the picture unchanged"


@pytest.mark.parametrize("style", ["watercolour", "neon", "pixel", "minimal", "sketch"])
def test_each_style_changes_the_rendering(style: str) -> None:
    plain = pixels("a house by the sea at sunset", seed=9)
    styled = pixels("a house by the sea at sunset", style=style, seed=9)
    assert np.abs(styled - plain).mean() > 6


def test_style_words_in_the_prompt_work_and_both_spellings_of_watercolour() -> None:
    assert read_prompt("a watercolor fox").style == "watercolour"
    assert read_prompt("a fox", "Watercolour").style == "watercolour"
    assert np.abs(pixels("a watercolor fox", seed=2) - pixels("a fox", seed=2)).mean() > 6
    assert read_prompt("neon city").style == "neon"


def test_styles_have_their_own_character() -> None:
    plain = pixels("a city at dusk", seed=5)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixel = pixels("a city at dusk", style="pixel", seed=5).astype(np.uint8)
    assert len(np.unique(pixel.reshape(-1, 3), axis=0)) <= 24
    assert share(np.all(pixel[:, 1:] == pixel[:, :-1], axis=2)) > 0.8  # big square pixels
    sketch = pixels("a city at dusk", style="sketch", seed=5)
    saturation = sketch.max(axis=2) - sketch.min(axis=2)
    assert saturation.mean() < (plain.max(axis=2) - plain.min(axis=2)).mean() / 2
    neon = pixels("a city at dusk", style="neon", seed=5)
    neon_saturation = neon.max(axis=2) - neon.min(axis=2)
    assert np.median(neon @ luma) < 50, "neon lines glow on a dark ground"
    plain_saturation = plain.max(axis=2) - plain.min(axis=2)
    vivid = share((neon_saturation > 150) & (neon.max(axis=2) > 200))
    assert vivid > 0.008
    assert vivid > 4 * share((plain_saturation > 150) & (plain.max(axis=2) > 200))
    watercolour = pixels("a city at dusk", style="watercolour", seed=5)
    assert (watercolour @ luma).mean() > (plain @ luma).mean()
    minimal = pixels("a city at dusk", style="minimal", seed=5).astype(np.uint8)
    assert len(np.unique(minimal.reshape(-1, 3), axis=0)) <= 7


def test_description_and_title_say_what_was_drawn() -> None:
    title, description = describe_prompt("a red fox under a blue moon", "watercolour")
    assert description == "A red fox beneath a blue moon, in a watercolour style, on a night sky."
    assert title == "Red Fox and Blue Moon"
    result = LocalProvider().generate(
        prompt="a house by the sea with a boat", style="", seed=1, size=96, progress=lambda n: None
    )
    assert result.description == "A house, with the sea and boat, in daylight."
    assert describe_prompt("something dreamy in teal")[1].startswith(
        "An abstract landscape in teal"
    )
