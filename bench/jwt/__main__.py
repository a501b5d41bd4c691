"""``python -m bench.jwt``: see :mod:`bench.jwt.run`."""

from bench.jwt.run import main

raise SystemExit(main())
