from typing import Any

from django.apps import AppConfig
from django.conf import settings

from resilience.config.startup import log_config_warnings


def update_last_login_best_effort(sender: Any, user: Any, **kwargs: Any) -> None:
    """Django's own receiver, as bookkeeping: an admin login works while the primary is down."""
    from django.contrib.auth.models import update_last_login  # models load after the app registry

    from resilience.db.bookkeeping import best_effort

    best_effort("last_login", lambda: update_last_login(sender, user, **kwargs))


class ResilienceConfig(AppConfig):
    name = "resilience"
    verbose_name = "Resilience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import user_logged_in

        from resilience import checks
        from resilience.auth.replay import deferred_flush
        from resilience.auth.ring import ring_cache
        from resilience.breakers import guard_rails as breaker_guard_rails
        from resilience.cache import guard_rails as cache_guard_rails
        from resilience.db import guard_rails as db_guard_rails
        from resilience.db.monitor import monitor_task_register
        from resilience.events import events_flush
        from resilience.observability import metrics as observability_metrics
        from resilience.serving import guard_rails as serving_guard_rails
        from resilience.staff import sessions as staff_sessions
        from resilience.staff.audit import audit_connect
        from resilience.staff.otp import otp_deferred_flush

        log_config_warnings(settings.BULWARK_CONFIG)
        checks.register()
        for area in (breaker_guard_rails, db_guard_rails, cache_guard_rails, serving_guard_rails):
            area.register()
        monitor_task_register(deferred_flush)
        monitor_task_register(events_flush)  # resilience events buffered in this worker
        monitor_task_register(ring_cache.keep_fresh, needs_primary=False)  # what the health check peeks at
        observability_metrics.register()  # this worker's gauges for /metrics, refreshed every second
        staff_sessions.register()  # revocable admin sessions: signals, deferred epoch writes
        monitor_task_register(otp_deferred_flush)  # used backup codes whose deletion waited for the primary
        user_logged_in.disconnect(dispatch_uid="update_last_login")
        user_logged_in.connect(update_last_login_best_effort, dispatch_uid="update_last_login_best_effort")
        audit_connect()  # admin log-ins, failures and refusals as resilience events (resilience/staff)
