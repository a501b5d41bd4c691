"""What the serving bulkheads buy: checkout and login while a stuck catalog dependency floods the server.

``.venv/bin/python -m bench.serving`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
