"""Runtime settings: one frozen value, parsed once."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from squidmesh_backends.errors import ConfigurationError


def default_owner() -> str:
    """The worker name ``RuntimeSettings.owner`` defaults to: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeSettings:
    """How the runtime leases, heartbeats, polls and shuts down."""

    lease: timedelta = timedelta(seconds=30)
    """How long a claim lasts without a heartbeat before another worker may reclaim it."""
    heartbeat_every: timedelta = timedelta(seconds=10)
    """How often a running step extends its lease (well under ``lease``)."""
    poll_interval: timedelta = timedelta(seconds=1)
    """Longest the dispatcher sleeps before looking for due jobs again."""
    shutdown_timeout: timedelta = timedelta(seconds=10)
    """How long ``stop`` lets running steps finish before releasing their leases."""
    claim_batch: int = 32
    """Most jobs claimed in one go."""
    concurrency: int = 8
    """Most steps one worker runs at once (the in-process executor's slots, or the
    Taskiq executor's when ``compose`` builds one for a broker)."""
    max_conflict_retries: int = 50
    """How often a decision is re-made after a version conflict before giving up."""
    owner: str = field(default_factory=default_owner)
    """This worker's name, recorded on its leases and on each attempt it runs
    (default: ``host:pid``, so operators can tell which process ran what). With
    the default, a second worker running in the same process reports itself as
    ``host:pid#2`` (and so on) in the workers' table only; see ``_presence``."""
    inline_next_step: bool = True
    """After a step succeeds, run the next step at once in the same worker when it is
    due now (leased and fenced like any delivery) instead of going through the
    dispatcher and the executor's queue."""
    inline_chain_limit: int = 64
    """Most steps one delivery runs inline before handing back to the dispatcher."""
    cron_misfire_window: timedelta | None = None
    """How far back missed cron ticks are caught up after every worker was down.
    ``None``: only the most recent missed tick; older ones are skipped and reported."""

    def __post_init__(self) -> None:
        if self.cron_misfire_window is not None and self.cron_misfire_window <= timedelta(0):
            raise ConfigurationError("cron_misfire_window must be positive (or None)")
        if self.heartbeat_every >= self.lease:
            raise ConfigurationError("heartbeat_every must be shorter than lease")
        for name in ("lease", "heartbeat_every", "poll_interval"):
            if getattr(self, name) <= timedelta(0):
                raise ConfigurationError(f"{name} must be positive")
        if (
            self.claim_batch < 1
            or self.concurrency < 1
            or self.max_conflict_retries < 1
            or self.inline_chain_limit < 1
        ):
            raise ConfigurationError(
                "claim_batch, concurrency, max_conflict_retries and inline_chain_limit must be >= 1"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeSettings:
        """Read settings from ``SQUIDMESH_*`` environment variables.

        Variables: ``SQUIDMESH_LEASE_SECONDS``, ``SQUIDMESH_HEARTBEAT_SECONDS``,
        ``SQUIDMESH_POLL_SECONDS``, ``SQUIDMESH_SHUTDOWN_SECONDS``, ``SQUIDMESH_CONCURRENCY``,
        ``SQUIDMESH_INLINE`` (``0`` or ``1``).
        """

        def seconds(name: str, default: timedelta) -> timedelta:
            raw = environ.get(name)
            if raw is None:
                return default
            try:
                return timedelta(seconds=float(raw))
            except ValueError as exc:
                raise ConfigurationError(
                    f"{name} must be a number of seconds, got {raw!r}"
                ) from exc

        base = cls()
        raw_concurrency = environ.get("SQUIDMESH_CONCURRENCY")
        try:
            concurrency = int(raw_concurrency) if raw_concurrency else base.concurrency
        except ValueError as exc:
            raise ConfigurationError(
                f"SQUIDMESH_CONCURRENCY must be an integer, got {raw_concurrency!r}"
            ) from exc
        return cls(
            lease=seconds("SQUIDMESH_LEASE_SECONDS", base.lease),
            heartbeat_every=seconds("SQUIDMESH_HEARTBEAT_SECONDS", base.heartbeat_every),
            poll_interval=seconds("SQUIDMESH_POLL_SECONDS", base.poll_interval),
            shutdown_timeout=seconds("SQUIDMESH_SHUTDOWN_SECONDS", base.shutdown_timeout),
            concurrency=concurrency,
            inline_next_step=_flag(environ.get("SQUIDMESH_INLINE"), base.inline_next_step),
        )


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"SQUIDMESH_INLINE must be 0 or 1, got {raw!r}")
