"""``python -m bench.ratelimit``: see :mod:`bench.ratelimit.run`."""

from bench.ratelimit.run import main

raise SystemExit(main())
