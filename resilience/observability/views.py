"""``/metrics`` (and ``/metrics/``): django-prometheus's exposition, for scrapers only.

Open to a client on loopback or in ``METRICS_ALLOWED_NETWORKS``, or to any client sending
``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time); anyone else gets ``403 permission_denied``.
The client address is the one the rate limits use (``TRUSTED_PROXY_COUNT`` entries from the right of
``X-Forwarded-For``, see :mod:`resilience.ratelimit.client_ip`), but exact: an IPv6 client is not widened to
its /64. Behind HAProxy every connection comes from loopback, so with ``TRUSTED_PROXY_COUNT`` set the forwarded
address decides; a direct connection without the header (a local scraper) is the loopback peer it is.

A plain Django view, never a DRF one: no throttle counts it, so a scrape is never rate limited. In multiprocess
mode (gunicorn, :mod:`resilience.observability.multiprocess`) django-prometheus's view reads every worker's files.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django_prometheus.exports import ExportToDjangoView

from core.api.responses import error_response
from core.exceptions import PermissionDeniedError
from resilience.ratelimit.client_ip import _parse as parse_address  # the one parser of proxy header entries

logger = logging.getLogger("resilience.observability")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DENIED_MESSAGE = "Metrics are open to loopback, METRICS_ALLOWED_NETWORKS and the METRICS_TOKEN bearer only."


@functools.cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            logger.warning("METRICS_ALLOWED_NETWORKS: %r is not a network (CIDR); ignored", entry)
    return tuple(networks)


def client_address(meta: dict, trusted_proxy_count: int) -> Address | None:
    """The exact client address: ``REMOTE_ADDR``, or the trusted ``X-Forwarded-For`` entry (as client_ip)."""
    chosen = parse_address(str(meta.get("REMOTE_ADDR") or ""))
    if trusted_proxy_count > 0:
        hops = [hop for hop in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()]
        if len(hops) >= trusted_proxy_count:
            chosen = parse_address(hops[-trusted_proxy_count]) or chosen
    if isinstance(chosen, ipaddress.IPv6Address) and chosen.ipv4_mapped is not None:
        return chosen.ipv4_mapped
    return chosen


def _token_ok(request: HttpRequest, token: str | None) -> bool:
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def metrics_allowed(request: HttpRequest) -> bool:
    """Whether this request may read the metrics (the rules in the module docstring)."""
    config = settings.BULWARK_CONFIG
    if _token_ok(request, config.metrics_token):
        return True
    address = client_address(request.META, config.trusted_proxy_count)
    if address is None:
        return False
    if address.is_loopback:
        return True
    return any(address in network for network in _networks(tuple(config.metrics_allowed_networks or ())))


@csrf_exempt
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition of every worker, or 403 for a client that may not read it."""
    if not metrics_allowed(request):
        return error_response(request, PermissionDeniedError(DENIED_MESSAGE))
    return ExportToDjangoView(request)
