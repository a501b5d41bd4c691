"""The resilience drill: the seed's five criteria (primary lost and replica promoted, JWT key rotated, a
misconfiguration, Redis lost, the payment gateway lost) as phases under a bounded mixed load, plus a race of 20
buyers for a short stock; PASS/FAIL per criterion, exit 1 on a FAIL.

``make drill`` or ``.venv/bin/python -m bench.drill`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
