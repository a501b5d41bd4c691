"""Database failover benchmark: the resilient router against the seed's naive replica-then-primary fallback.

It starts its own devstack stack and gunicorn, runs a bounded mixed read/write load on loopback while a
schedule kills, hangs, slows (CPU-starves), restarts and promotes PostgreSQL nodes, and reports per phase the
requests, writes by answer, errors by code, GET p50/p99/max and GETs over 1 s, the longest stretch without an
answer, and the resilient-to-naive GET p99 ratio, for both ``DB_FAILOVER_MODE`` values. Run:
``.venv/bin/python -m bench.failover`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
