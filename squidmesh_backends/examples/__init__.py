"""Example workflows shipped with SquidMesh (used by ``squidmesh smoke``)."""
