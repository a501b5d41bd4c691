"""Load and chaos drills for Bulwark; each sub-package is runnable with ``python -m bench.<name>``.

Raw results go to ``bench/results/`` (git-ignored); reports and plots go to ``docs/benchmarks.md``.
What more than one benchmark needs (gunicorn, manage.py, a fresh stack, the code measured, the common options,
the report files, the run with its cleanup) is in :mod:`bench.harness`.
"""
