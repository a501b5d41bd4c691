"""The admin's log-in and password-change forms, limited like the API's log-in.

``BulwarkAdminSite.login`` and ``.password_change`` (:mod:`resilience.dashboard.sites`) call
:func:`admin_login_limited` / :func:`password_change_limited` on every POST before Django looks at the credentials.
Every POST is counted, not only failures, so while a limit holds a right password is refused too (as the API's
``POST /api/auth/token/``). The scopes are the policy's (:mod:`resilience.ratelimit.policy`), counted exactly on the
same store as every other limit:

- ``admin_login``: per client IP (``RATELIMIT_ADMIN_LOGIN``; behind ``TRUSTED_PROXY_COUNT`` proxies, the address
  they saw);
- ``admin_login_user``: per username whatever the IP (``RATELIMIT_ADMIN_LOGIN_USER``): the one typed in the log-in
  form (case and surrounding blanks ignored), the signed-in user's for a password change (never a field of the
  form), so both forms of one account share its budget.

Over a limit: the admin-styled page ``admin/login_limited.html``, ``429`` with ``Retry-After`` and the
``RateLimit-*`` headers, never cached. It is the same page whether or not the account exists (counting happens
before any lookup, the page names no account). Refusals are audited (:mod:`resilience.staff.audit`).
:func:`staff_limit_check` applies any scope the same way (the second factor's ``otp``).

When Redis fails the counts go on in each worker's memory at its share of the limit (the fallback cache; the
request that met the failure pays one short timeout, later ones none): limits keep holding, never a 5xx.
``RATELIMIT_ENABLED=false`` or a scope set to ``off`` lets every attempt through.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from resilience.ratelimit.exceptions import RateLimitedError
from resilience.ratelimit.policy import enforce, scope_key, username_key
from resilience.staff.audit import staff_login_refused_record

LOGIN_SCOPES = ("admin_login", "admin_login_user")  # the IP first: over it, the username is not counted
TEMPLATE = "admin/login_limited.html"
ATTEMPTS = {"login": "log-in attempts", "password_change": "password-change attempts", "otp": "second-factor attempts"}


def admin_login_limited(request: HttpRequest) -> HttpResponse | None:
    """Count this admin log-in POST per IP and per username typed; the 429 page when over a limit, else None."""
    return _limited(request, LOGIN_SCOPES, form="login")


def password_change_limited(request: HttpRequest) -> HttpResponse | None:
    """Count this password-change POST per IP and per signed-in user (whatever the form holds: the budget of the
    account's log-ins); the 429 page when over a limit, else None."""
    account = username_key(request.user.get_username()) if _signed_in(request) else None
    return _limited(
        request, LOGIN_SCOPES, form="password_change", keys={"admin_login_user": account} if account else None
    )


def staff_limit_check(
    request: HttpRequest, scope: str, key: str | None = None, *, form: str = "otp"
) -> HttpResponse | None:
    """Count this request against ``scope`` (a name in ``policy.SCOPES``), by ``key`` when given (e.g.
    ``f"user:{user.pk}"`` before the user is signed in), else by the scope's own key; the 429 page when over the
    limit (the refusal audited as ``form``), else None. Counted once per request and scope, re-runs included."""
    return _limited(request, (scope,), form=form, keys={scope: key} if key is not None else None)


def limited_response(request: HttpRequest, error: RateLimitedError, *, form: str = "login") -> HttpResponse:
    """The admin-styled 429 page for ``error``: how long to wait, ``Retry-After``, ``RateLimit-*``, not cached."""
    retry_after = int(error.headers.get("Retry-After", "1"))
    context = {
        **admin.site.each_context(request),
        "title": "Too many attempts",
        "attempts": ATTEMPTS.get(form, "attempts"),
        "retry_after": retry_after,
        "wait": wait_text(retry_after),
        "again_url": request.get_full_path(),
        "on_login_page": form == "login" or not _signed_in(request),
    }
    response = render(request, TEMPLATE, context, status=429)
    for name, value in error.headers.items():
        response[name] = value
    add_never_cache_headers(response)
    return response


def wait_text(seconds: int) -> str:
    """``seconds`` for a person: "1 second", "45 seconds", "3 minutes", "2 hours" (rounded up)."""
    if seconds < 120:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    if seconds < 2 * 3600:
        return f"{-(-seconds // 60)} minutes"
    return f"{-(-seconds // 3600)} hours"


def _limited(
    request: HttpRequest, scopes: tuple[str, ...], *, form: str, keys: dict[str, str] | None = None
) -> HttpResponse | None:
    try:
        enforce(request, scopes, keys=keys)
    except RateLimitedError as error:
        staff_login_refused_record(
            request,
            username=_username(request, form),
            scope=error.scope,
            key=(keys or {}).get(error.scope) or scope_key(request, error.scope),
            retry_after=int(error.headers.get("Retry-After", "1")),
            form=form,
        )
        return limited_response(request, error, form=form)
    return None


def _username(request: HttpRequest, form: str) -> str:
    """Who the attempt was for (the audit's subject): the signed-in user's for a password change, else the username
    typed in the form, else the signed-in user's."""
    typed = request.POST.get("username") if request.method == "POST" and form != "password_change" else None
    if typed is None and _signed_in(request):
        typed = request.user.get_username()
    return typed or ""


def _signed_in(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)
