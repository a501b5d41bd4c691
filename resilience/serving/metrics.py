"""The serving metrics, by traffic class (five values: the labels stay bounded).

- ``bulwark_serving_requests_total{traffic_class, outcome}``: ``served`` (reached the application),
  ``overloaded`` (refused by the bulkhead), ``too_large`` (refused for its body), ``not_in_pool`` (a path this
  server's pool does not serve), ``timeout`` (cut off by its time budget; also counted as served);
- ``bulwark_serving_in_flight{traffic_class}`` (livesum over the workers) and ``bulwark_serving_limit``
  (livemax: the per-worker limit);
- ``bulwark_serving_request_duration_seconds{traffic_class}``: time in the application, per class (the class's
  latency objective; django-prometheus's histograms are per view).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = ("served", "overloaded", "too_large", "not_in_pool", "timeout")

REQUESTS = Counter(
    "bulwark_serving_requests",
    "Requests by traffic class and what the serving layer did.",
    ["traffic_class", "outcome"],
)
IN_FLIGHT = Gauge(
    "bulwark_serving_in_flight",
    "Requests of the class in flight now, summed over the live workers.",
    ["traffic_class"],
    multiprocess_mode="livesum",
)
LIMIT = Gauge(
    "bulwark_serving_limit",
    "The class's concurrency limit in each worker (SERVING_LIMIT_<CLASS>).",
    ["traffic_class"],
    multiprocess_mode="livemax",
)
DURATION = Histogram(
    "bulwark_serving_request_duration_seconds",
    "Time a request of the class spent in the application.",
    ["traffic_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
