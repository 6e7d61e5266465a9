"""Default namespaces and printed store addresses: derived from the store, never its password."""

from __future__ import annotations

import pytest

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.postgres._identity import describe_dsn, namespace_of
from squidmesh_backends.runtime.bootstrap import default_namespace
from squidmesh_backends.taskiq import namespaced_queue


def test_the_namespace_names_database_and_schema_and_ignores_the_password() -> None:
    one = default_namespace("postgresql://app:old@db:5432/shop?schema=billing")
    assert one.startswith("shop.billing-")
    assert default_namespace("postgresql://app:new@db:5432/shop?schema=billing") == one
    assert default_namespace("postgresql://app@db:5432/shop?schema=orders") != one
    assert default_namespace("postgresql://app@other:5432/shop?schema=billing") != one
    keywords = namespace_of("host=db port=5432 dbname=shop user=app password='a b'", "billing")
    assert keywords == one


def test_multi_host_urls_work_and_nonsense_is_a_configuration_error() -> None:
    assert namespace_of("postgresql://u@h1:5432,h2:5433/db", "public").startswith("db.public-")
    with pytest.raises(ConfigurationError):
        namespace_of("host=x port", "public")


def test_sqlite_and_memory_namespaces(tmp_path: object) -> None:
    assert default_namespace("memory") == "memory"
    assert default_namespace("sqlite:/tmp/a/app.db").startswith("app-")
    assert default_namespace("sqlite:/tmp/a/app.db") != default_namespace("sqlite:/tmp/b/app.db")
    assert default_namespace("sqlite:/tmp/.hidden.db").startswith("hidden-")


def test_printed_addresses_never_show_the_password() -> None:
    assert describe_dsn("postgresql://app:s3cret@db:6432/shop") == "app@db:6432/shop"
    assert "s3cr" not in describe_dsn("host=db password='s3cr et' dbname=shop")
    assert describe_dsn("postgresql://u@[::1]:5432/d") == "u@[::1]:5432/d"


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "a/b"])
def test_namespaces_are_checked(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        namespaced_queue(bad)
