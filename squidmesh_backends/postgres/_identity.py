"""What a PostgreSQL address says about itself, for people and for namespaces.

Both forms of a connection string (``postgresql://`` URLs, multi-host ones
included, and libpq ``key=value`` strings) are read by libpq's own parser, so
a password never reaches a log line or a namespace.
"""

from __future__ import annotations

import hashlib
import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from squidmesh_backends.errors import ConfigurationError


def _parts(dsn: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"not a PostgreSQL connection string: {exc}") from exc


def describe_dsn(dsn: str) -> str:
    """``postgres@127.0.0.1:5432/test``: user, hosts, ports and database, never the password."""
    parts = _parts(dsn)
    user = f"{parts['user']}@" if "user" in parts else ""
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    where = ",".join(f"[{h}]" if ":" in h else h for h in host.split(","))
    return f"{user}{where}:{port}/{parts.get('dbname', parts.get('user', 'postgres'))}"


def namespace_of(dsn: str, schema: str) -> str:
    """``test.public-1a2b3c4d``: database and schema, and a hash of hosts, ports, database, schema.

    The password (and every other option) stays out, so rotating it keeps the
    namespace. The hash follows the hosts as written: runtimes that reach one
    server by different names get different namespaces (name it explicitly then).
    """
    parts = _parts(dsn)
    database = parts.get("dbname", parts.get("user", "postgres"))
    identity = f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{database}/{schema}"
    label = re.sub(r"[^A-Za-z0-9._-]", "_", f"{database}.{schema}")[:40].lstrip("._-")
    return f"{label or 'pg'}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
