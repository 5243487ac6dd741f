"""Telemetry: Prometheus metrics (and, later, traces and structured logs)."""
