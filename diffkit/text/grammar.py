"""builtin:weather, a corpus generated from a small grammar that can also judge any sentence.

Short weather reports: four sentence templates with four slots (day, city, sky, temperature). The slots
agree: each sky allows only a range of temperatures (snow below 3 degrees, sunshine from 5 up), so a
valid sentence needs more than the right words in the right places. Because the grammar is ours,
`parse` tells exactly whether a generated sentence is valid and which slot values it holds, and
`record` / `from_record` give the data-to-text pairs of `--pairs builtin:weather`.
"""

from __future__ import annotations

import random
import re

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "today", "tomorrow")
CITIES = ("paris", "berlin", "oslo", "madrid", "rome", "lisbon", "vienna", "dublin", "prague", "athens")
# The temperatures each sky allows, in degrees: the agreement a model has to learn.
SKIES = {"sunny": (5, 35), "cloudy": (-5, 25), "rainy": (2, 20), "snowy": (-10, 2), "windy": (-5, 25),
         "foggy": (0, 15), "stormy": (10, 30), "clear": (-10, 35)}
TEMPLATES = (
    "{day} will be {sky} in {city} with a high of {temp} degrees .",
    "{city} , {day} : {sky} , high {temp} .",
    "it is {sky} in {city} {day} and the temperature is {temp} degrees .",
    "{city} expects a {sky} {day} with temperatures near {temp} degrees .",
)
SLOTS = ("day", "city", "sky", "temp")


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if i % 2 == 0 else rf"(?P<{part}>\S+)" for i, part in enumerate(parts))
    return re.compile(regex)


PATTERNS = [_pattern(t) for t in TEMPLATES]


def random_slots(rng: random.Random) -> dict:
    sky = rng.choice(list(SKIES))
    low, high = SKIES[sky]
    return {"day": rng.choice(DAYS), "city": rng.choice(CITIES), "sky": sky, "temp": str(rng.randint(low, high))}


def sentence(rng: random.Random, slots: dict | None = None) -> str:
    return rng.choice(TEMPLATES).format(**(slots or random_slots(rng)))


def record(slots: dict) -> str:
    """The source side of a data-to-text pair: "city paris day monday sky rainy temp 12"."""
    return " ".join(f"{name} {slots[name]}" for name in ("city", "day", "sky", "temp"))


def from_record(text: str) -> dict | None:
    words = text.split()
    if len(words) != 8 or words[0::2] != ["city", "day", "sky", "temp"]:
        return None
    return dict(zip(words[0::2], words[1::2]))


def parse(text: str) -> dict | None:
    """The slot values of a sentence the grammar accepts, else None."""
    text = " ".join(text.split())
    for pattern in PATTERNS:
        match = pattern.fullmatch(text)
        if match and _agrees(match.groupdict()):
            return match.groupdict()
    return None


def _agrees(slots: dict) -> bool:
    if slots["day"] not in DAYS or slots["city"] not in CITIES or slots["sky"] not in SKIES:
        return False
    if not re.fullmatch(r"-?\d+", slots["temp"]):
        return False
    low, high = SKIES[slots["sky"]]
    return low <= int(slots["temp"]) <= high


def lines(count: int, seed: int) -> list[str]:
    """`count` sentences, the same for the same seed."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(count)]


def pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (record, sentence) pairs, the same for the same seed."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        slots = random_slots(rng)
        result.append((record(slots), sentence(rng, slots)))
    return result
