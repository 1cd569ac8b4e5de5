"""Numbers as people say them: "three", "twenty one", "third", "a hundred", "42".

The recogniser produces words, the brain needs integers; both use these tables so the
grammar offers exactly the number words the brain can read back.
"""

from __future__ import annotations

UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
ORDINAL_UNITS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
}
ORDINAL_TENS = {
    "twentieth": 20,
    "thirtieth": 30,
    "fortieth": 40,
    "fiftieth": 50,
    "sixtieth": 60,
    "seventieth": 70,
    "eightieth": 80,
    "ninetieth": 90,
}
HUNDRED = "hundred"

NUMBER_WORDS = frozenset(
    [*UNITS, *TENS, *ORDINAL_UNITS, *ORDINAL_TENS, HUNDRED, "hundredth", "a", "and"]
)


def _ordinal_digits(token: str) -> int | None:
    """ "3rd", "21st" → 3, 21."""
    if len(token) > 2 and token[-2:] in ("st", "nd", "rd", "th") and token[:-2].isdigit():
        return int(token[:-2])
    return None


def parse_number(words: list[str], start: int = 0) -> tuple[int, int, bool] | None:
    """Read one number at ``words[start]``.

    Returns ``(value, words_used, is_ordinal)`` or None when no number starts there.
    Handles digits ("42", "3rd"), "twenty one", "twenty-one", "a hundred and five",
    "third", "twenty first".
    """
    if start >= len(words):
        return None
    token = words[start]
    if token.isdigit():
        return int(token), 1, False
    ordinal = _ordinal_digits(token)
    if ordinal is not None:
        return ordinal, 1, True
    if "-" in token:
        parts = token.split("-")
        parsed = parse_number(parts)
        if parsed is not None and parsed[1] == len(parts):
            return parsed[0], 1, parsed[2]
        return None

    value = 0
    used = 0
    index = start
    # "a hundred", "one hundred and five", "two hundred"
    if index + 1 < len(words) and words[index] in ("a", "one") and words[index + 1] == HUNDRED:
        value, index = 100, index + 2
    elif (
        index + 1 < len(words)
        and words[index] in UNITS
        and UNITS[words[index]] > 0
        and words[index + 1] in (HUNDRED, "hundredth")
    ):
        if words[index + 1] == "hundredth":
            return UNITS[words[index]] * 100, 2, True
        value, index = UNITS[words[index]] * 100, index + 2
    if value:
        used = index - start
        if index < len(words) and words[index] == "and":
            index += 1
        rest = _below_hundred(words, index)
        if rest is not None:
            return value + rest[0], index - start + rest[1], rest[2]
        return value, used, False
    below = _below_hundred(words, start)
    return below


def _below_hundred(words: list[str], start: int) -> tuple[int, int, bool] | None:
    if start >= len(words):
        return None
    token = words[start]
    if token in UNITS:
        return UNITS[token], 1, False
    if token in ORDINAL_UNITS:
        return ORDINAL_UNITS[token], 1, True
    if token in ORDINAL_TENS:
        return ORDINAL_TENS[token], 1, True
    if token in TENS:
        if start + 1 < len(words):
            nxt = words[start + 1]
            if nxt in UNITS and 0 < UNITS[nxt] < 10:
                return TENS[token] + UNITS[nxt], 2, False
            if nxt in ORDINAL_UNITS and ORDINAL_UNITS[nxt] < 10:
                return TENS[token] + ORDINAL_UNITS[nxt], 2, True
        return TENS[token], 1, False
    return None


def spoken_numbers(limit: int = 100) -> list[str]:
    """Cardinal word forms for 0..limit ("twenty one"), for a recogniser's grammar."""
    by_value = {v: k for k, v in UNITS.items()}
    out = []
    for n in range(limit + 1):
        if n < 20:
            out.append(by_value[n])
        elif n < 100:
            tens = next(k for k, v in TENS.items() if v == n - n % 10)
            out.append(tens if n % 10 == 0 else f"{tens} {by_value[n % 10]}")
        else:
            out.append("one hundred")
    return out


def spoken_ordinals(limit: int = 30) -> list[str]:
    """Ordinal word forms 1..limit ("twenty first")."""
    by_value = {v: k for k, v in ORDINAL_UNITS.items()}
    out = []
    for n in range(1, limit + 1):
        if n < 20:
            out.append(by_value[n])
        else:
            tens_ord = next(k for k, v in ORDINAL_TENS.items() if v == n - n % 10)
            tens = next(k for k, v in TENS.items() if v == n - n % 10)
            out.append(tens_ord if n % 10 == 0 else f"{tens} {by_value[n % 10]}")
    return out
