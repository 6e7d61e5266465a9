"""Composition root: build a runtime from names and settings, nothing at import time.

Drivers load only when a name asks for them: the PostgreSQL store (psycopg) when
the store is a PostgreSQL URL, Taskiq (and Redis) when a broker is given, so a
memory or SQLite runtime imports neither.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.probe import NO_PROBE, Probe
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.ports import EventSink, Executor, RunStore

if TYPE_CHECKING:
    from taskiq import AsyncBroker


def compose(
    *,
    workflows: Iterable[WorkflowDefinition],
    store: str | RunStore = "memory",
    executor: str | Executor = "inprocess",
    broker: str | AsyncBroker | None = None,
    settings: RuntimeSettings | None = None,
    sinks: Sequence[EventSink] = (),
    cron: Iterable[str | WorkflowDefinition] = (),
    probe: Probe = NO_PROBE,
    namespace: str | None = None,
) -> Runtime:
    """Build a :class:`Runtime`.

    Args:
        workflows: the workflows this runtime may run (registered by name).
        store: ``"memory"``, ``"sqlite:PATH"`` (the embedded durable store),
            ``"postgresql://..."`` (optionally with ``?schema=NAME``) or a RunStore
            instance. A store built from a name is closed by ``Runtime.aclose``.
        executor: ``"inprocess"`` or an Executor instance.
        broker: run steps through Taskiq: ``"redis://..."`` (a Redis streams
            broker set up for SquidMesh), ``"memory"`` (Taskiq's in-process
            broker, for tests) or any ``AsyncBroker``. Replaces ``executor``.
        settings: leases, polling, concurrency; defaults are production-safe.
        sinks: event subscribers.
        cron: the workflows (names or definitions) whose cron triggers this runtime
            starts while it runs; a workflow not listed is never started by cron.
        probe: receives counts for tests and benchmarks (see ``squidmesh_backends.probe``).
        namespace: names this application's stream and consumer group on a broker
            given by name, so applications sharing one Redis database never take
            each other's messages. Default: derived from the store (its database
            and schema, or its file), so runtimes on one store share one.

    Raises:
        ConfigurationError: an unknown store or executor name.
    """
    chosen = settings or RuntimeSettings()
    run_store = open_store(store, probe=probe) if isinstance(store, str) else store
    runner: Executor
    if broker is not None:
        from squidmesh_backends.taskiq import TaskiqExecutor, open_broker  # noqa: PLC0415

        named = namespace or default_namespace(store)
        chosen_broker = (
            open_broker(broker, lease=chosen.lease, namespace=named)
            if isinstance(broker, str)
            else broker
        )
        runner = TaskiqExecutor(chosen_broker, concurrency=chosen.concurrency)
    elif isinstance(executor, str):
        if executor != "inprocess":
            raise ConfigurationError(f"unknown executor {executor!r} (available: 'inprocess')")
        runner = InProcessExecutor(concurrency=chosen.concurrency)
    else:
        missing = [
            name
            for name in ("capacity", "free_slots", "start", "submit", "stop")
            if not hasattr(executor, name)
        ]
        if isinstance(executor, type):
            missing = ["an instance (a class was given)"]
        if missing:
            raise ConfigurationError(
                f"{executor!r} is not an executor: it lacks {', '.join(missing)} "
                "(see squidmesh_core.protocol.Executor)"
            )
        runner = executor
    return Runtime(
        store=run_store,
        executor=runner,
        workflows=workflows,
        settings=chosen,
        sinks=sinks,
        cron=cron,
        probe=probe,
        owns_store=isinstance(store, str),
    )


def open_store(spec: str, *, probe: Probe = NO_PROBE) -> RunStore:
    """Build a store from its name: ``memory``, ``sqlite:PATH`` or a PostgreSQL URL.

    A PostgreSQL URL (``postgresql://`` or ``postgres://``) may carry
    ``schema=NAME`` among its query parameters: the schema holding SquidMesh's
    tables (default ``public``), which ``squidmesh migrate`` must have prepared.

    Raises:
        ConfigurationError: the name is not one of these, or a SQLite file's
            folder does not exist (it is not made silently).
    """
    if spec == "memory":
        return MemoryRunStore(probe=probe)
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ConfigurationError("sqlite store needs a path: 'sqlite:PATH'")
        folder = Path(path).parent
        if path != ":memory:" and not folder.is_dir():
            raise ConfigurationError(
                f"sqlite store {path!r}: the folder {str(folder)!r} does not exist; create it first"
            )
        return SqliteRunStore(path, probe=probe)
    if spec.startswith(("postgresql://", "postgres://")):
        from squidmesh_backends.postgres import PostgresRunStore  # noqa: PLC0415

        dsn, schema = split_schema(spec)
        return PostgresRunStore(dsn, schema=schema, probe=probe)
    raise ConfigurationError(
        f"unknown store {spec!r} (use 'memory', 'sqlite:PATH' or 'postgresql://...')"
    )


def default_namespace(store: str | RunStore) -> str:
    """A namespace naming the store: ``test.public-1a2b3c4d`` for a PostgreSQL schema.

    Readable (database and schema, or the file's name) and unique (a hash of the
    server, database and schema, or of the file's absolute path). The memory
    store, private to its process, is ``memory``.
    """
    if isinstance(store, str):
        if store.startswith(("postgresql://", "postgres://")):
            dsn, schema = split_schema(store)
            return _pg_namespace(dsn, schema)
        if store.startswith("sqlite:"):
            return _file_namespace(store.removeprefix("sqlite:").removeprefix("//"))
        return "memory"
    found = {name: getattr(store, name, None) for name in ("dsn", "schema", "path")}
    if isinstance(found["dsn"], str) and isinstance(found["schema"], str):
        return _pg_namespace(found["dsn"], found["schema"])
    if isinstance(found["path"], str):
        return _file_namespace(found["path"])
    return type(store).__name__.lower()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _pg_namespace(dsn: str, schema: str) -> str:
    from squidmesh_backends.postgres import namespace_of  # noqa: PLC0415

    return namespace_of(dsn, schema)


def _file_namespace(path: str) -> str:
    absolute = os.path.abspath(path)
    label = re.sub(r"[^A-Za-z0-9._-]", "_", Path(absolute).stem)[:40].lstrip("._-")
    return f"{label or 'sqlite'}-{_digest(absolute)}"


def split_schema(url: str) -> tuple[str, str]:
    """Take SquidMesh's ``schema`` parameter out of a PostgreSQL URL: ``(dsn, schema)``."""
    base, _, query = url.partition("?")
    kept: list[str] = []
    schema = "public"
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name == "schema":
            schema = unquote(value)
        else:
            kept.append(part)
    return (f"{base}?{'&'.join(kept)}" if kept else base), schema
