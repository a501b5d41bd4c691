"""What the resilience layer costs the hot paths: list, product, log-in, cart read, checkout, layer off vs on.

``.venv/bin/python -m bench.hotpaths`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
