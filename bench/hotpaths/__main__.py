"""``python -m bench.hotpaths``: see :mod:`bench.hotpaths.run`."""

from bench.hotpaths.run import main

raise SystemExit(main())
