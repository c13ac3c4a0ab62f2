"""The value types of the config schema: what a field accepts, declared beside its default.

Each alias is a type pydantic validates (``capfuse.config.values``) and a phrase the error
message reads back (``allowed``): ``train.lr = 'abc': must be a number > 0``. Scalars are
strict, because YAML and ``--set`` hand over exactly what was typed: the string "false" is not
a bool, 2.9 is not an integer and "abc" is not a number; an integer where a number is expected
is fine. Lists are read as tuples (YAML has no tuples), so settings stay hashable.
"""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import Strict, StringConstraints

Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # strict still takes an int: lr: 1 means 1.0
Str = Annotated[str, Strict()]

Count = Annotated[int, Strict(), Ge(1)]  # how many of something: at least one
CountOrOff = Annotated[int, Strict(), Ge(0)]  # a count where 0 turns the feature off
Positive = Annotated[float, Strict(), Gt(0)]  # a rate, a scale, a temperature
NonNegative = Annotated[float, Strict(), Ge(0)]  # a weight or a decay, 0: none
Share = Annotated[float, Strict(), Gt(0), Le(1)]  # a share of something that cannot be empty
Probability = Annotated[float, Strict(), Ge(0), Le(1)]
Dropout = Annotated[float, Strict(), Ge(0), Lt(1)]  # 1 would drop every unit
Name = Annotated[str, Strict(), MinLen(1)]


class Says:
    """The allowed values in words, for a constraint that has no phrase of its own (a pattern)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Says({self.text!r})"


# A torch device a config may name: heads train on the CPU; fine-tuning picks a GPU.
Device = Annotated[
    str, Strict(), StringConstraints(pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$"), Says("'cpu', 'cuda', 'cuda:<n>' or 'mps'")
]
# A prompt template: the class name goes where {name} is.
Template = Annotated[str, Strict(), StringConstraints(pattern=r"\{name\}"), Says("a string holding {name}")]


class BadValue(ValueError):
    """A value that only the block as a whole can judge (it depends on another field), raised by a
    block's ``__post_init__``; the message names ``key`` within the block like any other value."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


__all__ = [
    "BadValue",
    "Bool",
    "Count",
    "CountOrOff",
    "Device",
    "Dropout",
    "Float",
    "Int",
    "Literal",
    "Name",
    "NonNegative",
    "Positive",
    "Probability",
    "Says",
    "Share",
    "Str",
    "Template",
]
