"""Rate limits: per scope, counted in Redis, in process memory while Redis is down.

Scopes (each set by ``RATELIMIT_<SCOPE>``; ``RATELIMIT_ENABLED=false`` switches every one off):
``api`` every API request per user, or per client IP when anonymous; ``login`` and ``login_user`` token
obtain per client IP and per username; ``register`` and ``refresh`` per client IP; ``checkout`` per user.
A request counts all its scopes in one Redis round trip at most, the global ``api`` scope mostly from the worker's
lease (:mod:`resilience.ratelimit.counting`: never over the limit, at most 5 % under).

When Redis fails, counting goes on in each process's memory from the next call (the cache's circuit, see
:mod:`resilience.cache`), and each of the ``WEB_CONCURRENCY`` workers then allows its share of a limit,
``ceil(limit / workers)``: a client whose requests spread over every worker gets about the configured limit,
one that keeps hitting one worker gets less, never more. Counters are not carried between Redis and memory,
so a switch gives each client a fresh window. The client IP is ``REMOTE_ADDR`` unless ``TRUSTED_PROXY_COUNT``
proxies stand in front (:mod:`resilience.ratelimit.client_ip`).
"""
