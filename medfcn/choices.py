"""Parsing a named choice (a network variant, a device, a normalisation, an output format): one rule for all.

Every set of choices is a :class:`~enum.StrEnum`; :func:`parse_choice` turns a user's string into its member,
case-insensitively, or raises the caller's error class with a one-line message naming the valid choices (a
model file's card: :class:`ModelError`; a command-line option: :class:`UsageError`). No heavy imports: the
command line parses its options with it before torch is loaded.

>>> from enum import StrEnum
>>> from medfcn.errors import UsageError
>>> class Colour(StrEnum):
...     RED = "red"
...     BLUE = "blue"
>>> parse_choice(Colour, "Blue", "colour")
<Colour.BLUE: 'blue'>
>>> parse_choice(Colour, "green", "--colour", UsageError)
Traceback (most recent call last):
...
medfcn.errors.UsageError: --colour 'green' is not one of: red, blue
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from medfcn.errors import MedfcnError, ModelError

__all__ = ["parse_choice", "choices_of"]

E = TypeVar("E", bound=StrEnum)


def choices_of(enum: type[StrEnum]) -> str:
    """The valid values of ``enum``, comma-separated, in declaration order."""
    return ", ".join(m.value for m in enum)


def parse_choice(enum: type[E], value: Any, what: str, error: type[MedfcnError] = ModelError) -> E:
    """``value`` (any case, surrounding spaces ignored) as a member of ``enum``.

    Raises ``error`` (default :class:`ModelError`) as ``"<what> <value> is not one of: <choices>"``.
    """
    try:
        return enum(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        raise error(f"{what} {value!r} is not one of: {choices_of(enum)}") from None
