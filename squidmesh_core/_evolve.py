"""A fast ``dataclasses.replace`` for the core's frozen, slotted value classes.

``decide`` copies ``RunState`` and its parts several times per decision, and
``dataclasses.replace`` spends most of that time rebuilding keyword arguments and
re-running ``__init__``. The values are already valid (they were built through
``__init__`` once), so a copy only has to carry the fields over and set the
changed ones. Unknown field names are refused, as ``replace`` would.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import TypeVar

T = TypeVar("T")
_FIELDS: dict[type, tuple[str, ...]] = {}
_set = object.__setattr__


def evolve(value: T, **changes: object) -> T:
    """A copy of ``value`` with ``changes`` applied (frozen dataclasses with slots)."""
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None:
        if not is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        names = tuple(f.name for f in fields(cls))
        _FIELDS[cls] = names
    for name in changes:
        if name not in names:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
    copy = object.__new__(cls)
    for name in names:
        _set(copy, name, changes[name] if name in changes else getattr(value, name))
    return copy
