"""``python -m bench.failover``: see :mod:`bench.failover.run`."""

from bench.failover.run import main

raise SystemExit(main())
