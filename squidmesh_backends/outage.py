"""``Outage``: a service that fails is reported once when lost and once when back.

Workers depend on services (the broker, the store) that restart now and then.
A loop that retries such a service reports each outage in two lines and never
with a traceback, whatever number of retries it takes. Rules:

1. The first failure after the service was reachable logs one WARNING naming
   the service and the error (type and message, at most 200 characters).
2. ``reached`` after an outage logs one WARNING with how long it lasted.
3. A loop that fails for another reason (a bug) logs it with its traceback
   (:func:`log_failure`): only service faults are kept short.
4. The pause before each retry doubles from :data:`FIRST_PAUSE` to
   :data:`LONGEST_PAUSE`, and starts over once the service had served for
   :data:`HEALTHY_AFTER` seconds without failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from squidmesh_backends.errors import BackendError
from squidmesh_backends.logs import get_logger

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0
HEALTHY_AFTER = 10.0
"""Seconds of service after which the retry pause starts over from ``FIRST_PAUSE``."""


def describe(error: BaseException | None) -> str:
    """An error in one short line: its type and message, at most 200 characters."""
    if error is None:
        return "it stopped answering"
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 200 else text[:197] + "..."


class Outage:
    """Tells when ``service`` was lost and when it is back; paces the retries (rules 1, 2, 4)."""

    def __init__(
        self,
        service: str,
        *,
        logger: str = "squidmesh.worker",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.log = get_logger(logger)
        self.clock = clock
        self.since: float | None = None
        """When the current outage began (``None``: the service is reachable)."""
        self.pause = FIRST_PAUSE
        self.outages = 0
        """Outages seen so far."""

    def failed(self, error: BaseException | None, *, served_for: float = 0.0) -> float:
        """Note a failure after ``served_for`` seconds of service; the pause before retrying."""
        if served_for >= HEALTHY_AFTER:
            self.pause = FIRST_PAUSE
        if self.since is None:
            self.since = self.clock()
            self.outages += 1
            self.log.warning(
                "lost %s (%s); trying again until it is back", self.service, describe(error)
            )
        pause, self.pause = self.pause, min(self.pause * 2, LONGEST_PAUSE)
        return pause

    def reached(self) -> None:
        """The service answered again."""
        if self.since is not None:
            self.log.warning("%s is back after %.1fs", self.service, self.clock() - self.since)
            self.since = None


def log_failure(log: logging.Logger, what: str, error: BaseException) -> None:
    """Log that ``what`` failed: a service fault in one WARNING line, a bug with its traceback.

    Service faults are :class:`~squidmesh_backends.errors.BackendError`: each
    adapter translates its driver's errors into one at its edge.
    """
    if isinstance(error, BackendError):
        log.warning("%s: %s", what, describe(error))
    else:
        log.error("%s", what, exc_info=error)
