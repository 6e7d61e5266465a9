"""Loading the host application's runtime from ``module:attribute``.

Every mistake in ``--app`` is a :class:`ConfigurationError` with a sentence
saying what was given and what is expected (the CLI prints it and exits 2):

1. The spec must be ``package.module:attribute``; a file path (``app.py``,
   ``src/app:runtime``) is named as such, with the module form to use instead.
2. A module that cannot be imported, or that fails while importing, is named
   with the failure's type and message (no traceback).
3. The attribute must exist; it may be a :class:`Runtime` or a plain function
   taking no arguments that returns one. A class, a coroutine function, a
   function needing arguments, or anything else is refused by what it is.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime.runtime import Runtime

_FORM = "'package.module:attribute' (for example 'myapp.workflows:runtime')"


def _module_of(spec: str) -> tuple[str, str]:
    module_name, colon, attribute = spec.partition(":")
    looks_like_path = "/" in module_name or "\\" in module_name or module_name.endswith(".py")
    if looks_like_path:
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("./").replace("/", ".")
        raise ConfigurationError(
            f"--app takes a module, not a file path: {spec!r}; "
            f"use {dotted or 'package.module'}:{attribute or 'runtime'} from the project's root"
        )
    if not colon or not module_name or not attribute:
        raise ConfigurationError(f"--app must look like {_FORM}, got {spec!r}")
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigurationError(f"--app module {module_name!r} is not a dotted module name")
    if not all(part.isidentifier() for part in attribute.split(".")):
        raise ConfigurationError(f"--app attribute {attribute!r} is not a dotted attribute name")
    return module_name, attribute


def _what(target: object) -> str:
    if inspect.isclass(target):
        return f"the class {target.__name__}"
    return f"a {type(target).__name__}"


def _called(spec: str, factory: object) -> object:
    if inspect.iscoroutinefunction(factory):
        raise ConfigurationError(
            f"{spec!r} is an async function; give a Runtime or a plain function returning one"
        )
    assert callable(factory)
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise ConfigurationError(
            f"{spec!r} is a function that needs arguments; give a Runtime or a function "
            "taking none that returns one"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    try:
        return factory()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"calling {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def load_runtime(spec: str) -> Runtime:
    """Import ``module`` and return ``attribute``: a Runtime, or a function returning one.

    The current directory is importable, as for ``python -m``.

    Raises:
        ConfigurationError: the spec is malformed, cannot be imported, or is not a runtime.
    """
    module_name, attribute = _module_of(spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    except ConfigurationError:
        raise
    except Exception as exc:  # the host's module failed while importing
        raise ConfigurationError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, Runtime):
        return target
    if inspect.isclass(target) or not callable(target):
        raise ConfigurationError(
            f"{spec!r} is {_what(target)}, not a squidmesh Runtime "
            "(give a Runtime built with compose(...), or a function returning one)"
        )
    made = _called(spec, target)
    if not isinstance(made, Runtime):
        raise ConfigurationError(
            f"{spec!r} returned {_what(made)}, not a squidmesh Runtime "
            "(build one with squidmesh_backends.compose(...))"
        )
    return made
