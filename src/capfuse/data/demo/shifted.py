"""The shifted development set: the same classes, scenes and captions, new drawings in test.

A real test set can show object instances that never occur in training: the categories are the
same, the drawings are new. Random K-fold CV cannot see that (every fold's held-out rows share
their instances' look with the training folds), so a model that learns instances scores well in
CV and worse on the test. ``make data DATA=data/shifted`` writes such a set from the demo's
generator: labels and scenes come from the same draws as the demo's, but each split draws every
class from its own half of the class's looks:

* shape variants: a class with several (person, car, truck, bus, boat, cat) draws train objects
  from the first and test objects from the others;
* colour families: train draws from the even-numbered palettes of the class, test from the odd
  ones, so no (class, palette) pair occurs in both;
* drawing style: test objects are inked with a dark contour, train objects are not.

Captions come from the same grammar, in distribution: only the images shift. The split's look
is a ``Look``; ``None`` (every other preset) draws exactly what the demo always drew.
"""

from __future__ import annotations

from dataclasses import dataclass

# The kinds of shift a preset may name (``make_demo(shift=...)``); the name is in the dataset's
# stamp, so a change to what one draws takes a new name (or a GENERATOR_VERSION bump), or
# `make data` would keep a set drawn the old way.
SHIFTS = ("disjoint",)
INK = (20, 20, 24)  # the test split's contour colour


@dataclass(frozen=True)
class Look:
    """Which of a class's shape variants and palettes one split draws, and how it inks them."""

    half: int  # 0: train's half of the looks, 1: test's
    outline: bool

    def shapes(self, variants: list) -> list:
        if len(variants) < 2:
            return variants
        return variants[:1] if self.half == 0 else variants[1:]

    def palettes(self, palettes: list) -> list:
        if len(palettes) < 2:
            return palettes
        return palettes[self.half :: 2]


def split_look(shift: str | None, split: str) -> Look | None:
    """The look of ``split`` under ``shift``; None without a shift (the demo's own drawing)."""
    if shift is None:
        return None
    if shift not in SHIFTS:
        raise ValueError(f"unknown demo shift {shift!r}; known: {', '.join(SHIFTS)}")
    # Unlabelled rows stand for more test-time data, so they look like the test split.
    test_like = split != "train"
    return Look(half=int(test_like), outline=test_like)
