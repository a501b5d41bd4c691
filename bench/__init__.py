"""Load and chaos drills for Bulwark; each sub-package is runnable with ``python -m bench.<name>``.

Raw results go to ``bench/results/`` (git-ignored); reports and plots go to ``docs/benchmarks.md``.
"""
