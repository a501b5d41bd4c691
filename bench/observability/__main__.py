"""``python -m bench.observability``: see :mod:`bench.observability.run`."""

from bench.observability.run import main

raise SystemExit(main())
