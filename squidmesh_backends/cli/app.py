"""Loading the host application's runtime from ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime.runtime import Runtime


def load_runtime(spec: str) -> Runtime:
    """Import ``module`` and return ``attribute``: a Runtime, or a callable returning one.

    The current directory is importable, as for ``python -m``.

    Raises:
        ConfigurationError: the spec is malformed, cannot be imported, or is not a runtime.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app must look like 'package.module:attribute', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not isinstance(target, Runtime) and callable(target):
        target = target()
    if not isinstance(target, Runtime):
        raise ConfigurationError(f"{spec!r} is a {type(target).__name__}, not a squidmesh Runtime")
    return target
