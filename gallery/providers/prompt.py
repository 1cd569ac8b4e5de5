"""Reading a prompt: which colours, motifs, styles and time of day it names, and how to say
back in a sentence what a picture of it shows. Shared by every provider."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (206, 38, 42),
    "crimson": (170, 20, 48),
    "scarlet": (228, 36, 28),
    "orange": (242, 122, 30),
    "amber": (240, 160, 30),
    "gold": (236, 184, 48),
    "golden": (236, 184, 48),
    "yellow": (246, 212, 54),
    "green": (52, 160, 72),
    "emerald": (20, 150, 100),
    "teal": (20, 140, 140),
    "turquoise": (48, 200, 190),
    "cyan": (40, 200, 230),
    "blue": (40, 92, 220),
    "azure": (60, 140, 240),
    "navy": (20, 36, 110),
    "indigo": (60, 40, 160),
    "purple": (130, 50, 180),
    "violet": (150, 80, 220),
    "magenta": (220, 40, 170),
    "pink": (246, 120, 180),
    "rose": (232, 90, 130),
    "white": (244, 244, 248),
    "silver": (196, 204, 216),
    "grey": (128, 132, 140),
    "gray": (128, 132, 140),
    "black": (22, 22, 28),
    "brown": (128, 76, 40),
}
# Spellings and plurals folded onto one motif name each.
MOTIF_WORDS: dict[str, str] = {
    "sun": "sun",
    "sunny": "sun",
    "moon": "moon",
    "moonlit": "moon",
    "mountain": "mountain",
    "mountains": "mountain",
    "peak": "mountain",
    "peaks": "mountain",
    "hills": "mountain",
    "sea": "sea",
    "ocean": "sea",
    "lake": "sea",
    "waves": "sea",
    "water": "sea",
    "river": "sea",
    "beach": "sea",
    "tree": "tree",
    "trees": "tree",
    "forest": "tree",
    "woods": "tree",
    "pine": "tree",
    "pines": "tree",
    "city": "city",
    "skyline": "city",
    "town": "city",
    "buildings": "city",
    "cat": "cat",
    "cats": "cat",
    "kitten": "cat",
    "fox": "fox",
    "foxes": "fox",
    "flower": "flower",
    "flowers": "flower",
    "garden": "flower",
    "meadow": "flower",
    "tulips": "flower",
    "roses": "flower",
    "star": "stars",
    "stars": "stars",
    "starry": "stars",
    "starlit": "stars",
    "snow": "snow",
    "snowy": "snow",
    "winter": "snow",
    "snowfall": "snow",
    "bird": "bird",
    "birds": "bird",
    "gulls": "bird",
    "house": "house",
    "cottage": "house",
    "cabin": "house",
    "home": "house",
    "boat": "boat",
    "ship": "boat",
    "sailboat": "boat",
    "sail": "boat",
    "cloud": "cloud",
    "clouds": "cloud",
    "cloudy": "cloud",
}
MOTIF_NAMES: dict[str, str] = {
    "sun": "sun",
    "moon": "moon",
    "mountain": "mountains",
    "sea": "sea",
    "tree": "trees",
    "city": "city",
    "cat": "cat",
    "fox": "fox",
    "flower": "flowers",
    "stars": "stars",
    "snow": "snow",
    "bird": "birds",
    "house": "house",
    "boat": "boat",
    "cloud": "clouds",
}
# Creatures and things a picture is "of", in order of how strongly they make a subject.
SUBJECT_ORDER = ("fox", "cat", "boat", "house", "bird", "flower", "tree", "city")
STYLE_WORDS: dict[str, str] = {
    "watercolour": "watercolour",
    "watercolor": "watercolour",
    "painted": "watercolour",
    "neon": "neon",
    "cyberpunk": "neon",
    "synthwave": "neon",
    "pixel": "pixel",
    "pixels": "pixel",
    "8-bit": "pixel",
    "retro": "pixel",
    "minimal": "minimal",
    "minimalist": "minimal",
    "flat": "minimal",
    "sketch": "sketch",
    "pencil": "sketch",
    "drawing": "sketch",
}
STYLE_NAMES: dict[str, str] = {
    "watercolour": "watercolour",
    "neon": "neon",
    "pixel": "pixel-art",
    "minimal": "minimal",
    "sketch": "pencil-sketch",
}
TIME_WORDS: dict[str, str] = {
    "night": "night",
    "midnight": "night",
    "nocturnal": "night",
    "evening": "dusk",
    "dusk": "dusk",
    "twilight": "dusk",
    "sunset": "sunset",
    "sundown": "sunset",
    "dawn": "sunset",
    "sunrise": "sunset",
    "morning": "day",
    "noon": "day",
    "day": "day",
    "daylight": "day",
}
TIME_PHRASES = {
    "night": "on a night sky",
    "dusk": "in the dusk",
    "sunset": "at sunset",
    "day": "in daylight",
}
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


@dataclass(frozen=True)
class PromptReading:
    words: tuple[str, ...]
    colours: tuple[str, ...]  # every colour word, in prompt order, without repeats
    motifs: tuple[str, ...]  # every motif, in prompt order, without repeats
    motif_colours: dict[str, str] = field(default_factory=dict)  # "fox" -> "red"
    free_colours: tuple[str, ...] = ()  # colour words not bound to a motif
    styles: tuple[str, ...] = ()
    time: str = "day"

    @property
    def subject(self) -> str | None:
        """The creature named first, else the first thing named that a picture can be "of"."""
        for motif in self.motifs:
            if motif in ("fox", "cat"):
                return motif
        for motif in self.motifs:
            if motif in SUBJECT_ORDER:
                return motif
        return None

    @property
    def celestial(self) -> str | None:
        for motif in self.motifs:
            if motif in ("moon", "sun"):
                return motif
        return None

    @property
    def style(self) -> str:
        return self.styles[0] if self.styles else ""


def read_prompt(prompt: str, style: str = "") -> PromptReading:
    """Parse a prompt (and an optional separate style) into what a picture should show."""
    words = tuple(_WORD.findall(prompt.lower()))
    colours: list[str] = []
    motifs: list[str] = []
    motif_colours: dict[str, str] = {}
    bound: set[int] = set()
    for index, word in enumerate(words):
        if word in COLOURS and word not in colours:
            colours.append(word)
        motif = MOTIF_WORDS.get(word)
        if motif is None:
            continue
        if motif not in motifs:
            motifs.append(motif)
        # A colour right before a motif ("red fox", "deep blue sea") is that motif's colour.
        for back in (1, 2):
            if index - back >= 0 and words[index - back] in COLOURS:
                motif_colours.setdefault(motif, words[index - back])
                bound.add(index - back)
                break
    free = []
    for index, word in enumerate(words):
        if word in COLOURS and index not in bound and word not in free:
            free.append(word)

    styles: list[str] = []
    for word in (*_WORD.findall(style.lower()), *words):
        name = STYLE_WORDS.get(word)
        if name and name not in styles:
            styles.append(name)

    time = "day"
    for word in words:
        if word in TIME_WORDS:
            time = TIME_WORDS[word]
            break
    else:
        if "moon" in motifs or "stars" in motifs:
            time = "night"
    if time == "day" and "stars" in motifs:
        time = "night"
    return PromptReading(
        words=words,
        colours=tuple(colours),
        motifs=tuple(motifs),
        motif_colours=motif_colours,
        free_colours=tuple(free),
        styles=tuple(styles),
        time=time,
    )


def _motif_phrase(reading: PromptReading, motif: str, *, article: bool = True) -> str:
    name = MOTIF_NAMES[motif]
    colour = reading.motif_colours.get(motif)
    phrase = f"{colour} {name}" if colour else name
    if not article or name.endswith("s") or motif in ("snow", "sea", "city"):
        if motif in ("sea", "city", "sun", "moon"):
            return f"the {phrase}"
        return phrase
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _celestial_phrase(reading: PromptReading, motif: str) -> str:
    colour = reading.motif_colours.get(motif)
    if colour:
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {motif}"
    return f"the {motif}"


def describe(reading: PromptReading, prompt: str) -> tuple[str, str]:
    """A short title and a one-sentence description of what a picture of `reading` shows."""
    subject = reading.subject
    celestial = reading.celestial
    scenery = [m for m in reading.motifs if m not in (subject, celestial)]
    parts: list[str] = []
    if subject:
        head = _motif_phrase(reading, subject)
        if celestial:
            head += f" beneath {_celestial_phrase(reading, celestial)}"
    elif celestial:
        head = _celestial_phrase(reading, celestial)
    elif scenery:
        head = _motif_phrase(reading, scenery.pop(0))
    else:
        head = ""
    if head:
        parts.append(head[0].upper() + head[1:])
        if scenery:
            named = [_motif_phrase(reading, m, article=False) for m in scenery[:3]]
            joined = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
            parts.append(f"with {joined}")
    else:
        tones = reading.colours[:3]
        if tones:
            parts.append(
                "An abstract landscape in "
                + (tones[0] if len(tones) == 1 else ", ".join(tones[:-1]) + " and " + tones[-1])
            )
        else:
            parts.append("An imagined landscape")
    if reading.style:
        parts.append(f"in a {STYLE_NAMES[reading.style]} style")
    parts.append(TIME_PHRASES[reading.time])
    description = ", ".join(parts) + "."
    return _title(reading, prompt), description


def _title(reading: PromptReading, prompt: str) -> str:
    named = []
    for motif in (reading.subject, reading.celestial):
        if motif:
            colour = reading.motif_colours.get(motif, "")
            named.append(f"{colour} {MOTIF_NAMES[motif]}".strip().title())
    if not named:
        named = [MOTIF_NAMES[m].title() for m in reading.motifs[:2]]
    if named:
        return " and ".join(named)[:120]
    words = prompt.split()[:5]
    return (" ".join(w.strip(",.;:!?") for w in words).title() or "Untitled")[:120]


def describe_prompt(prompt: str, style: str = "") -> tuple[str, str]:
    """Title and description for a picture made from `prompt` by any provider."""
    return describe(read_prompt(prompt, style), prompt)
