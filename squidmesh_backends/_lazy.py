"""Lazy re-exports for a package's front door: names imported on first access."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence


def lazy_exports(
    package: str,
    namespace: MutableMapping[str, object],
    lazy: Mapping[str, str],
    exported: Sequence[str],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` that import ``lazy[name]`` on first use.

    The value is cached in ``namespace`` (the package's globals), so the second
    access is an ordinary attribute lookup.
    """

    def getattr_(name: str) -> object:
        if name not in lazy:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(lazy[name]), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *exported})

    return getattr_, dir_
