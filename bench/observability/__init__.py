"""What a failing log disk or trace collector costs a request: nothing, measured.

``.venv/bin/python -m bench.observability`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
