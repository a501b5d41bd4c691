"""``python -m bench.schema``: see :mod:`bench.schema.run`."""

from bench.schema.run import main

raise SystemExit(main())
