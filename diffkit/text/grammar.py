"""builtin:weather, a corpus generated from a small grammar that can also judge any sentence.

Short weather reports: four sentence templates with four slots (day, city, sky, temperature). The slots
agree: each sky allows only a range of temperatures (snow below 3 degrees, sunshine from 5 up), so a
valid sentence needs more than the right words in the right places. Because the grammar is ours,
`parse` tells exactly whether a generated sentence is valid and which slot values it holds, and
`record` / `from_record` give the data-to-text pairs of `--pairs builtin:weather`.

Two registers say the same records: "report" (the corpus of an unconditional run) and "chatty", four
templates of their own; each is a class of `train text --class-cond builtin:weather`, and `parse`
judges a sentence by one register's templates, so a conversion between them has a known answer: the
target register accepts the sentence and its slots are the input's.
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
CHATTY = (
    "hey , {day} looks {sky} in {city} , around {temp} degrees .",
    "so {city} gets a {sky} {day} , about {temp} degrees i think .",
    "oh , {city} will be {sky} {day} , maybe {temp} degrees .",
    "guess what , {day} is {sky} in {city} , like {temp} degrees .",
)
REGISTERS = {"report": TEMPLATES, "chatty": CHATTY}
SLOTS = ("day", "city", "sky", "temp")


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if i % 2 == 0 else rf"(?P<{part}>\S+)" for i, part in enumerate(parts))
    return re.compile(regex)


PATTERNS = {register: [_pattern(t) for t in templates] for register, templates in REGISTERS.items()}


def random_slots(rng: random.Random) -> dict:
    sky = rng.choice(list(SKIES))
    low, high = SKIES[sky]
    return {"day": rng.choice(DAYS), "city": rng.choice(CITIES), "sky": sky, "temp": str(rng.randint(low, high))}


def sentence(rng: random.Random, slots: dict | None = None, register: str = "report") -> str:
    return rng.choice(REGISTERS[register]).format(**(slots or random_slots(rng)))


def record(slots: dict) -> str:
    """The source side of a data-to-text pair: "city paris day monday sky rainy temp 12"."""
    return " ".join(f"{name} {slots[name]}" for name in ("city", "day", "sky", "temp"))


def from_record(text: str) -> dict | None:
    words = text.split()
    if len(words) != 8 or words[0::2] != ["city", "day", "sky", "temp"]:
        return None
    return dict(zip(words[0::2], words[1::2]))


def parse(text: str, register: str = "report") -> dict | None:
    """The slot values of a sentence the register's grammar accepts, else None."""
    text = " ".join(text.split())
    for pattern in PATTERNS[register]:
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


def lines(count: int, seed: int, register: str = "report") -> list[str]:
    """`count` sentences, the same for the same seed."""
    rng = random.Random(seed)
    return [sentence(rng, register=register) for _ in range(count)]


def labelled_lines(count: int, seed: int) -> tuple[list[str], list[int]]:
    """`count` sentences in registers drawn at random, and each one's register (its index in REGISTERS)."""
    rng = random.Random(seed)
    names = list(REGISTERS)
    labels = [rng.randrange(len(names)) for _ in range(count)]
    return [sentence(rng, register=names[k]) for k in labels], labels


def pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (record, sentence) pairs, the same for the same seed."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        slots = random_slots(rng)
        result.append((record(slots), sentence(rng, slots)))
    return result
