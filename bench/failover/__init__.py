"""Database failover benchmark: the resilient router against the seed's naive replica-then-primary fallback.

It starts its own devstack stack and gunicorn, runs a bounded mixed read/write load on loopback while a
schedule kills, hangs, restarts and promotes PostgreSQL nodes, and reports per phase the requests, errors by
status and p50/p99 latency for both ``DB_FAILOVER_MODE`` values. Run: ``.venv/bin/python -m bench.failover``
(``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
