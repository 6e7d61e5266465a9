"""Observability adapters: OpenTelemetry spans and metrics from SquidMesh's events."""
