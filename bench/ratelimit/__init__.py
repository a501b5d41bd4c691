"""Rate-limit cost benchmark: what counting a request costs in Redis mode, in memory-fallback mode (Redis
killed) and with rate limiting switched off.

It starts its own devstack stack and two gunicorn servers (limits on, limits off), sends sequential requests to
two limited endpoints in interleaved rounds, and reports per mode and endpoint the median, p90 and p99 latency
and the ratio to "off". Run: ``.venv/bin/python -m bench.ratelimit`` (``--help`` for the knobs). See
``docs/benchmarks.md``.
"""
