"""The caption grammar: which objects a caption names, by which words, in which sentence.

A caption names each present class with a probability set by the class (``MENTION_RATE``) and,
mildly, by the size of its largest instance; sometimes by an ambiguous word (``HYPERNYMS``);
occasionally it names a class that is absent. Templates, prefixes and suffixes put unquoted
commas and double quotes into the text on purpose: the COMP5329 file's quirk.
"""

from __future__ import annotations

import math
import re

import numpy as np

from capfuse.data.demo.scenes import SCENES, choice, weighted

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
MENTION: dict[str, float] = {
    # P(named) = rate[class] * (small + (1 - small) * min(1, sqrt(area) / full_area)): size
    # matters, but only mildly, so that what a caption misses is not just what the image hides
    # (otherwise the two modalities fail on the same objects and fusion has little to add).
    "small": 0.85,
    "full_area": 0.30,
    "max_mentions": 3,
    "hallucinate": 0.06,  # a plausible absent class is named (annotators err, objects are off-frame)
    "hypernym": 0.08,  # an ambiguous word instead of the class's own nouns
    "scene": 0.25,  # the caption names the place
    "adjective": 0.25,
    "quote": 0.25,  # an adjective, when used, is written in double quotes ("vintage")
    "prefix": 0.08,  # "Outside, ..." (a comma)
    "suffix": 0.10,  # "..., on a sunny day" (a comma)
    "no_period": 0.12,
}

# How readily a caption names each class. The split is what makes the two modalities
# complementary (checked with the probe in the package docstring): what a pretrained CNN finds
# in these drawings (people, cars, buses, street furniture, big scene-bound vehicles) is named
# less often, as background is in COCO captions; what it confuses or barely sees (pets, birds,
# trucks, two-wheelers, rare street objects) is usually named.
MENTION_RATE: dict[str, float] = {
    # easy to see, seldom named: the image side's classes
    "person": 0.35,
    "car": 0.25,
    "bus": 0.35,
    "traffic light": 0.15,
    "bench": 0.3,
    "airplane": 0.4,
    "train": 0.45,
    "boat": 0.4,
    # small or look-alike in the image, usually named: the caption side's classes
    "dog": 0.95,
    "cat": 0.95,
    "bird": 0.85,
    "truck": 0.8,
    "motorcycle": 0.85,
    "bicycle": 0.8,
    "horse": 0.8,
    "fire hydrant": 0.8,
    "stop sign": 0.8,
    "parking meter": 0.8,
}

# (singular, plural) nouns per class: the text side must learn synonyms.
NOUNS: dict[str, list[tuple[str, str]]] = {
    "person": [
        ("man", "men"),
        ("woman", "women"),
        ("person", "people"),
        ("child", "children"),
        ("boy", "boys"),
        ("girl", "girls"),
        ("guy", "guys"),
        ("lady", "ladies"),
    ],
    "bicycle": [("bicycle", "bicycles"), ("bike", "bikes"), ("push bike", "push bikes")],
    "car": [("car", "cars"), ("sedan", "sedans"), ("taxi", "taxis"), ("hatchback", "hatchbacks")],
    "motorcycle": [("motorcycle", "motorcycles"), ("motorbike", "motorbikes"), ("scooter", "scooters")],
    "airplane": [("airplane", "airplanes"), ("plane", "planes"), ("jet", "jets"), ("airliner", "airliners")],
    "bus": [("bus", "buses"), ("double decker", "double deckers"), ("coach", "coaches")],
    "train": [("train", "trains"), ("locomotive", "locomotives"), ("tram", "trams")],
    "truck": [("truck", "trucks"), ("lorry", "lorries"), ("pickup truck", "pickup trucks"), ("van", "vans")],
    "boat": [("boat", "boats"), ("ship", "ships"), ("sailboat", "sailboats"), ("yacht", "yachts")],
    "traffic light": [
        ("traffic light", "traffic lights"),
        ("stoplight", "stoplights"),
        ("traffic signal", "traffic signals"),
    ],
    "fire hydrant": [("fire hydrant", "fire hydrants"), ("hydrant", "hydrants")],
    "stop sign": [("stop sign", "stop signs")],
    "parking meter": [("parking meter", "parking meters"), ("meter", "meters")],
    "bench": [("bench", "benches"), ("park bench", "park benches")],
    "bird": [("bird", "birds"), ("seagull", "seagulls"), ("pigeon", "pigeons"), ("duck", "ducks")],
    "cat": [("cat", "cats"), ("kitty", "kitties"), ("kitten", "kittens")],
    "dog": [("dog", "dogs"), ("puppy", "puppies"), ("pup", "pups")],
    "horse": [("horse", "horses"), ("pony", "ponies"), ("mare", "mares")],
}

# Ambiguous words: the caption says "vehicle" and only the image tells car from bus.
HYPERNYMS: dict[str, list[tuple[str, str]]] = {
    "car": [("vehicle", "vehicles"), ("automobile", "automobiles")],
    "truck": [("vehicle", "vehicles")],
    "bus": [("vehicle", "vehicles")],
    "motorcycle": [("vehicle", "vehicles"), ("bike", "bikes")],
    "cat": [("pet", "pets"), ("animal", "animals")],
    "dog": [("pet", "pets"), ("animal", "animals")],
    "horse": [("animal", "animals")],
    "bird": [("animal", "animals")],
    "airplane": [("aircraft", "aircraft")],
    "traffic light": [("signal", "signals"), ("pole", "poles")],
    "parking meter": [("pole", "poles")],
    "stop sign": [("sign", "signs")],
    "fire hydrant": [("pole", "poles")],
}

# Present participles; "" means the noun stands alone.
VERBS: dict[str, list[str]] = {
    "person": ["standing", "walking", "sitting", "waiting", "posing", "talking on a phone"],
    "car": ["parked", "driving", "stopped"],
    "truck": ["parked", "driving"],
    "bus": ["driving", "parked", "stopped"],
    "motorcycle": ["parked", "leaning"],
    "bicycle": ["parked", "leaning"],
    "dog": ["running", "sitting", "lying", "playing"],
    "cat": ["sitting", "sleeping", "lying", "curled up"],
    "horse": ["grazing", "standing", "running"],
    "bird": ["perched", "flying", "sitting"],
    "airplane": ["flying", "taking off", "parked", "landing"],
    "boat": ["docked", "floating", "sailing"],
    "train": ["pulling into the station", "traveling", "stopped"],
}
# Things a person rides: "A man riding a horse".
RIDDEN = ("bicycle", "motorcycle", "horse", "boat")

ADJECTIVES: dict[str, list[str]] = {
    "_any": ["old", "small", "large", "big", "little", "lone"],
    "car": ["vintage", "shiny", "parked", "classic"],
    "bus": ["vintage", "city", "tour", "school"],
    "truck": ["delivery", "vintage", "dump"],
    "train": ["passenger", "freight", "vintage", "commuter"],
    "airplane": ["commercial", "passenger", "jumbo"],
    "boat": ["fishing", "small", "sail"],
    "dog": ["cute", "fluffy", "happy"],
    "cat": ["cute", "fluffy", "sleepy"],
    "person": ["young", "smiling", "tall"],
    "horse": ["brown", "beautiful"],
    "bird": ["tiny", "white"],
    "bench": ["wooden", "empty"],
}

SCENE_PHRASES: dict[str, list[str]] = {
    "street": [
        "on a city street",
        "on the street",
        "downtown",
        "at an intersection",
        "on a busy road",
        "near the sidewalk",
        "in the city",
    ],
    "highway": ["on the highway", "on a freeway", "on a busy road", "on the motorway", "in traffic"],
    "harbour": ["in the harbor", "at the marina", "on the water", "at the dock", "near the pier", "by the lake"],
    "airport": ["at the airport", "on the runway", "on the tarmac", "near the terminal"],
    "countryside": ["in a field", "on a farm", "in the countryside", "in a pasture", "on a dirt road"],
    "park": ["in the park", "on the grass", "in a garden", "on a lawn", "near some trees"],
    "home": ["in a living room", "on a couch", "in the kitchen", "indoors", "at home", "on the floor"],
    "railway": ["at the train station", "on the tracks", "on the railway", "at a platform", "near the station"],
}

# Templates by number of named objects; {A} capitalised noun phrase, {a} lower case, {v} a
# verb, {s} the scene phrase (may be empty). Some carry commas on purpose: the file quirk.
TEMPLATES: dict[int, list[str]] = {
    0: [
        "A view {s}.",
        "A picture taken {s}.",
        "An image of a place {s}.",
        "Looking out {s}.",
        "Nothing much going on {s}.",
        "A quiet scene {s}.",
    ],
    1: ["{A} {v} {s}.", "{A} {s}.", "There is {a} {s}.", "A close up of {a}.", "{A}, {v} {s}.", "A photo of {a} {s}."],
    2: [
        "{A} and {b} {s}.",
        "{A} next to {b}.",
        "{A} {v} near {b} {s}.",
        "{A}, {b} {s}.",
        "There is {a} and {b} {s}.",
        "{A} with {b}, {s}.",
    ],
    3: ["{A}, {b} and {c} {s}.", "{A} and {b} near {c}.", "{A} with {b}, {c} {s}."],
    -1: ["{P} riding {x} {s}.", "{P} on {x}, {s}.", "{P} riding {x}."],  # person + ridden object
}
PREFIXES = ["Outside, ", "In this picture, ", "Here, ", "On a sunny day, ", "From a distance, "]
SUFFIXES = [", on a sunny day", ", at dusk", ", in the rain", ", during the day", ", in the morning"]
COUNT_WORDS = {
    2: ["two", "a pair of", "a couple of"],
    3: ["three", "several", "some"],
    4: ["four", "a group of", "several", "many"],
}


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------


def _noun_phrase(rng: np.random.Generator, cls: str, count: int) -> str:
    if cls in HYPERNYMS and rng.random() < MENTION["hypernym"]:
        sing, plur = choice(rng, HYPERNYMS[cls])
    elif cls == "person" and count == 2 and rng.random() < 0.3:
        return choice(rng, ["a man and a woman", "two people", "a couple", "a woman and a child"])
    else:
        sing, plur = choice(rng, NOUNS[cls])
    adj = ""
    if rng.random() < MENTION["adjective"]:
        adj = choice(rng, ADJECTIVES.get(cls, []) + ADJECTIVES["_any"])
        if rng.random() < MENTION["quote"]:
            adj = f'"{adj}"'
        adj += " "
    if count == 1:
        article = "an" if (adj.lstrip('"') or sing)[0] in "aeiou" else "a"
        return f"{article} {adj}{sing}"
    if cls == "person" and count >= 3 and rng.random() < 0.4:
        return choice(rng, ["a group of people", "a crowd of people", "some people", "several people"])
    return f"{choice(rng, COUNT_WORDS[min(count, 4)])} {adj}{plur}"


def make_caption(rng: np.random.Generator, scene: str, info: dict[str, tuple[int, float]]) -> str:
    """A caption that names some of the objects in ``info`` (class -> (count, area fraction))."""
    named: list[tuple[float, str, int]] = []  # (salience, class, count)
    for cls, (count, area) in info.items():
        size = min(1.0, math.sqrt(area) / MENTION["full_area"])
        if rng.random() < MENTION_RATE[cls] * (MENTION["small"] + (1 - MENTION["small"]) * size):
            named.append((area, cls, count))
    if rng.random() < MENTION["hallucinate"]:
        absent = {c: p for c, p in SCENES[scene]["probs"].items() if c not in info}
        if absent:
            named.append((float(rng.uniform(0, 0.1)), weighted(rng, absent), 1))
    named.sort(key=lambda x: -x[0])
    named = named[: int(MENTION["max_mentions"])]
    classes = [c for _, c, _ in named]
    scene_phrase = choice(rng, SCENE_PHRASES[scene]) if (rng.random() < MENTION["scene"] or not named) else ""

    rider = next((c for c in classes if c in RIDDEN), None)
    if "person" in classes and rider is not None and rng.random() < 0.6:
        counts = {c: n for _, c, n in named}
        template = choice(rng, TEMPLATES[-1])
        person = _noun_phrase(rng, "person", counts["person"])
        text = template.format(P=person, x=_noun_phrase(rng, rider, counts[rider]), s=scene_phrase)
        rest = [c for c in classes if c not in ("person", rider)]
        if rest:
            text = text.rstrip(".") + f" with {_noun_phrase(rng, rest[0], counts[rest[0]])} nearby."
    else:
        phrases = [_noun_phrase(rng, c, n) for _, c, n in named]
        template = choice(rng, TEMPLATES[len(phrases)])
        verb = choice(rng, VERBS[classes[0]]) if classes and classes[0] in VERBS else ""
        slots = dict(zip("abc", phrases))
        text = template.format(s=scene_phrase, v=verb, **slots, **{k.upper(): v for k, v in slots.items()})
    if rng.random() < MENTION["suffix"]:
        text = text.rstrip(".") + choice(rng, SUFFIXES) + "."
    # Tidy the gaps an empty slot leaves ("A dog  ." -> "A dog.", "with a cat, ." -> "with a cat.").
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,\s*\.", ".", text)
    text = re.sub(r"\s+([.,])", r"\1", text).strip()
    text = text[0].upper() + text[1:]
    if rng.random() < MENTION["prefix"]:
        text = choice(rng, PREFIXES) + (text[0].lower() + text[1:] if not text.startswith('"') else text)
    if rng.random() < MENTION["no_period"]:
        text = text.rstrip(".")
    return text.replace("\n", " ").replace("\r", " ")
