"""``python -m bench.serving``: see :mod:`bench.serving.run`."""

from bench.serving.run import main

raise SystemExit(main())
