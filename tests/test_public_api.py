from __future__ import annotations

import squidmesh_core


def test_all_is_sorted_and_unique() -> None:
    names = list(squidmesh_core.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(names) == len(set(names))


def test_every_exported_name_exists() -> None:
    for name in squidmesh_core.__all__:
        assert hasattr(squidmesh_core, name), name


def test_every_public_name_is_exported() -> None:
    public = {n for n in vars(squidmesh_core) if not n.startswith("_")}
    modules = {n for n, v in vars(squidmesh_core).items() if type(v).__name__ == "module"}
    assert public - modules - {"annotations"} == set(squidmesh_core.__all__)
