"""JWT verification cost against the size of the key ring: 1 key vs 5 keys, HS256 and EdDSA.

Verification looks a token's key up by ``kid`` (a dictionary lookup), never by trying each key, so its cost
should not grow with the ring. This benchmark measures it in one process against a fresh devstack database:
``KeyedTokenBackend.decode`` and the full ``access_decode`` path, per-call timed, with the configurations
interleaved in rounds, plus the once-a-second ring refresh (one read of the ring rows + build). Run:
``.venv/bin/python -m bench.jwt`` (``--help`` for the knobs). See ``docs/benchmarks.md``.
"""
