"""``python -m bench.ha``: see :mod:`bench.ha.run`."""

from bench.ha.run import main

raise SystemExit(main())
