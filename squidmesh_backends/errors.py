"""Exceptions the shell raises for faults (expected outcomes are ``Result`` values).

::

    SquidmeshError (squidmesh_core.errors)
     +-- BackendError                 a store or broker failed in an unexpected way
     |    +-- BackendUnavailableError  the database or broker cannot be reached
     |    +-- MigrationRequiredError   the database schema is missing or too new
     +-- ContentionError              a run kept changing under a decision; retries ran out
     +-- ConfigurationError           invalid settings or composition (also ValueError)
"""

from __future__ import annotations

from squidmesh_core.errors import SquidmeshError


class BackendError(SquidmeshError):
    """A store or broker failed in an unexpected way."""


class BackendUnavailableError(BackendError):
    """The database or broker cannot be reached."""


class MigrationRequiredError(BackendError):
    """The database schema is missing or newer than this version understands."""


class ContentionError(SquidmeshError):
    """A run kept changing while a decision was being committed; bounded retries ran out."""


class ConfigurationError(SquidmeshError, ValueError):
    """Invalid settings or composition."""
