"""Observability: request ids, logging, metrics, tracing."""
