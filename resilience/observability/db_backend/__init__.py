"""Bulwark's node-aware PostgreSQL backend, counted by django-prometheus.

``ENGINE = "resilience.observability.db_backend"`` (settings/base.py).
"""
