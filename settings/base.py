"""Bulwark's Django settings, driven by the environment through ``resilience.config``.

Nothing here reads ``os.environ``: a misconfigured environment raises ``ConfigError`` with
every problem listed (manage.py and the WSGI entry point turn it into a clean exit).
"""

from pathlib import Path

from resilience.config import load_config
from resilience.observability.multiprocess import multiprocess_dir_prepare

BASE_DIR = Path(__file__).resolve().parent.parent
CONFIG = load_config()
multiprocess_dir_prepare(CONFIG)  # before anything imports prometheus_client (resilience/observability)

BULWARK_CONFIG = CONFIG
SECRET_KEY = CONFIG.secret_key
SECRET_KEY_FALLBACKS = CONFIG.secret_key_fallbacks
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts
BULWARK_ENV = CONFIG.django_env

# Production rules: HTTPS only (health and metrics stay reachable over HTTP for probes), secure cookies.
SECURE_PROXY_SSL_HEADER = CONFIG.proxy_ssl_header
if CONFIG.is_production:
    SECURE_SSL_REDIRECT = CONFIG.ssl_redirect
    SECURE_REDIRECT_EXEMPT = [r"^health(/.*)?$", r"^metrics/?$"]
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "resilience.dashboard.apps.BulwarkAdminConfig",  # django.contrib.admin with the resilience dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "health_check",  # the check base class and its page at /health/checks/ (resilience.health)
    "django_ratelimit",  # only for its system checks: limits are applied by resilience.ratelimit
    "django_prometheus",  # /metrics (resilience.observability.views): requests, database, cache
    "resilience.apps.ResilienceConfig",
    "shop.apps.ShopConfig",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: latency including every middleware
    "core.request_id.RequestIdMiddleware",
    "resilience.observability.logs.RequestLogMiddleware",  # one JSON "request" record per request
    "resilience.db.middleware.DatabaseRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the second factor of this session
    "resilience.staff.sessions.StaffSessionMiddleware",  # admin sessions: revocable (epoch), idle timeout
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # last: requests by view, method and status
]
PROMETHEUS_EXPORT_MIGRATIONS = False  # no database query at start-up

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
# /health and /metrics answer with and without the trailing slash; the URLconf handles both.
APPEND_SLASH = True

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The primary is `default`; replicas are `replica_1`, `replica_2`, ... The router sends reads to a healthy,
# current replica and everything else to the primary (resilience/db). Connections carry TCP keepalives; every
# query runs under a client-side deadline (QUERY_DEADLINE); replicas also get a server-side statement timeout.
_QUERY_DEADLINE = CONFIG.db_query_timeout.total_seconds()
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}


def _database(entry: dict, *, replica: bool) -> dict:
    options = {**_KEEPALIVES, **entry["OPTIONS"]}
    if replica:
        options.setdefault("options", f"-c statement_timeout={int(_QUERY_DEADLINE * 1000)}")
    database = {
        **entry,
        "ENGINE": "resilience.observability.db_backend",  # resilience.db.backend, counted by django-prometheus
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "QUERY_DEADLINE": _QUERY_DEADLINE,
    }
    if replica:
        # A physical replica copies the primary's test database: never create or migrate it in tests.
        database["TEST"] = {"MIRROR": "default"}
    return database


DATABASES = {"default": _database(CONFIG.database, replica=False)}
for _index, _replica in enumerate(CONFIG.replicas, start=1):
    DATABASES[f"replica_{_index}"] = _database(_replica, replica=True)
DATABASE_ROUTERS = ["resilience.db.router.FailoverRouter"]
BULWARK_DB_MONITOR = True  # the per-process node monitor (started by the first request)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

OTP_TOTP_ISSUER = "Bulwark"  # the name authenticator apps show for the staff second factor
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # no admin page shows a device key (Bulwark's device admins hide them too)

# Sessions (the admin's) live in signed cookies: logging in and browsing need no database write, so they keep
# working while the primary is down. A stolen cookie stays valid until it expires: keep the age short.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_AGE = 12 * 3600
SESSION_COOKIE_HTTPONLY = True

# Redis with a per-process circuit breaker, process memory as the fallback (and the only store without REDIS_URL).
# Short timeouts and no redis-py retries: an outage costs a process one timeout (resilience/cache).
CACHES = {
    "default": {
        "BACKEND": "resilience.cache.FallbackCache",
        "LOCATION": CONFIG.redis_url or "",
        "KEY_PREFIX": "bulwark",
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": CONFIG.redis_connect_timeout_ms / 1000,
            "SOCKET_TIMEOUT": CONFIG.redis_socket_timeout_ms / 1000,
            "PROBE_INTERVAL": 1.0,
            "SENTINELS": CONFIG.redis_sentinels,  # REDIS_SENTINELS: follow the master they name (LOCATION its name)
        },
    }
}

# Rate limits (resilience/ratelimit): django-ratelimit's counting core on the cache above.
RATELIMIT_ENABLE = CONFIG.ratelimit_enabled
RATELIMIT_USE_CACHE = "default"
RATELIMIT_RATES = CONFIG.ratelimit_rates  # scope -> (requests, seconds), None = off
RATELIMIT_TRUSTED_PROXY_COUNT = CONFIG.trusted_proxy_count
RATELIMIT_WORKERS = CONFIG.web_concurrency  # in memory mode each worker allows ceil(limit / workers)
# Bulkheads per traffic class in each worker (resilience/serving); False only for the undivided pool a benchmark
# compares with: requests are still classified and counted, never refused for concurrency.
SERVING_BULKHEADS = True
SILENCED_SYSTEM_CHECKS = [
    # "cache backend resilience.cache.FallbackCache is not officially supported": it is Redis (django-redis,
    # which django-ratelimit supports) with a memory fallback it cannot know about; its E003 still guards
    # against a plain LocMemCache.
    "django_ratelimit.W001",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Serve admin and Swagger UI assets straight from the installed apps (no STATIC_ROOT, no collectstatic).
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["resilience.auth.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The global per-client limit on every view, plus each view's own scopes (resilience/ratelimit/throttles.py).
    "DEFAULT_THROTTLE_CLASSES": ["resilience.ratelimit.throttles.RateLimitThrottle"],
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": CONFIG.jwt_access_lifetime,
    "REFRESH_TOKEN_LIFETIME": CONFIG.jwt_refresh_lifetime,
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # Keys, algorithms and kids come from the key ring (resilience/auth), never from these two settings.
    "ALGORITHM": "HS256",
    "SIGNING_KEY": CONFIG.jwt_secret,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "LEEWAY": int(CONFIG.jwt_leeway.total_seconds()),
    "ISSUER": "bulwark",
    "AUDIENCE": "bulwark-api",
}
BULWARK_JWT = {
    "KIDLESS_UNTIL": CONFIG.jwt_kidless_until,
    "JWKS_MAX_AGE": int(CONFIG.jwt_jwks_max_age.total_seconds()),
    "RING_REFRESH_SECONDS": 1.0,  # every worker re-reads the ring this often: a revocation reaches all in ~1 s
    "UNKNOWN_KID_REFRESH_SECONDS": 5.0,  # an unknown kid re-reads the ring at most this often per process
    "RING_MAX_STALE_SECONDS": 30.0,  # a ring not re-read for this long is not trusted (503), see auth/ring.py
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Bulwark API",
    "DESCRIPTION": "E-commerce backend with no single point of failure. Every error is "
    '`{"error": {"code", "message", "detail", "request_id"}}` with a stable `code`.\n\n'
    "Requests are checked against this schema: a body property or a query parameter that an operation does "
    "not list is a `400 validation_error` naming it (a typo is an error, not a silent no-op); a string may not "
    "contain a NUL character, and lengths count the characters sent.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Views validate a PATCH body as declared (never partial=True): document its required fields as required.
    "COMPONENT_SPLIT_PATCH": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "resilience.ratelimit.openapi.document_rate_limits",
        "core.api.schema.document_common_errors",
    ],
}

SHOP_CURRENCY = "USD"
# The gateway class, by dotted path (as EMAIL_BACKEND); built with the URL and timeouts below (shop/payments).
SHOP_PAYMENT_GATEWAY = "shop.payments.gateways.http.HttpPaymentGateway"
SHOP_PAYMENT_GATEWAY_URL = CONFIG.payment_gateway_url
SHOP_PAYMENT_GATEWAY_TIMEOUTS = (CONFIG.payment_gateway["connect_timeout"], CONFIG.payment_gateway["read_timeout"])
SHOP_PAYMENT_UNPAID_CANCEL_AFTER = CONFIG.payment_gateway["unpaid_cancel_after"]
# Circuit breakers by name (resilience/breakers): per-process state, forced open/closed from the admin.
BULWARK_BREAKERS = {
    "payment_gateway": {
        "failure_threshold": CONFIG.payment_gateway["breaker_failures"],
        "reset_timeout": CONFIG.payment_gateway["breaker_reset"],
        "half_open_max_calls": 1,
        "success_threshold": 1,
    },
}
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600

# JSON records through a bounded per-process queue (never blocking), secrets redacted; stdout and LOG_DIR.
# Built by a function (the same dict is gunicorn's logconfig_dict); imported here, after multiprocess_dir_prepare.
from resilience.observability.logs import logging_config  # noqa: E402

LOGGING = logging_config(CONFIG)  # django.server WARNING, health_check ERROR, as before
