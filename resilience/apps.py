from django.apps import AppConfig
from django.conf import settings

from resilience.config.startup import log_config_warnings


class ResilienceConfig(AppConfig):
    name = "resilience"
    verbose_name = "Resilience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        log_config_warnings(settings.BULWARK_CONFIG)
