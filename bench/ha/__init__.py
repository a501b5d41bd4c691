"""The high-availability drill on the scale-out topology (``python -m devstack ha``): Patroni switchover and
failovers, an etcd outage, a Sentinel failover and an app host lost, under a bounded mixed load; zero acknowledged
orders lost.

``.venv/bin/python -m bench.ha`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
