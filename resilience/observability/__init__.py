"""Logging, metrics and traces (the seed's logging and telemetry areas)."""
