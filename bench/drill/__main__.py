"""``python -m bench.drill``: see :mod:`bench.drill.run`."""

from bench.drill.run import main

raise SystemExit(main())
