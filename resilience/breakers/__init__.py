"""Circuit breakers and the guarded HTTP client for external services (the payment gateway, ...).

- :mod:`.breaker`: the breaker itself (our own, not pybreaker: see its docstring for why).
- :mod:`.registry`: this process's named breakers, configured from the environment; ``breakers_snapshot()``.
- :mod:`.controls`: operator overrides (force open / closed / automatic), audited, obeyed within ~1 s.
- :mod:`.listeners`: structured logs (logger ``resilience.breakers``) and Prometheus metrics.
- :mod:`.http`: the guarded HTTP client (connect and read timeouts, no retries, one breaker per service).

When a dependency fails: its calls raise ``ExternalServiceUnavailable`` -- at first after at most one
timeout each, then, once the breaker is open, at once without touching the network -- and the caller
degrades (the shop keeps orders ``pending_payment`` and collects them later). A trial call after the reset
timeout finds out when the dependency is back.
"""
