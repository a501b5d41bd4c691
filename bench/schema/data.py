"""Test data a schema cannot describe, shared by the hooks (``st run``) and the in-suite test.

* **Unique sign-ups.** ``POST /api/auth/register/`` refuses a taken username or e-mail (case-insensitively,
  after trimming and NFKC), and generated data repeats values on purpose (the coverage phase sends the same
  boundary values again and again). :func:`registration_made_unique` gives a schema-valid body a fresh username
  and e-mail *without* changing what the generator chose: a per-call tag is added to each, so the body stays
  valid against the schema (same pattern, within the lengths) and the strings the server normalises are the
  generated ones. Without it almost every sign-up after the first few is "taken", and the 201 -- whose body is
  where a non-conforming response was found -- is hardly exercised.
* **A cart to check out.** ``POST /api/orders/`` answers ``400 cart_empty`` while the cart is empty; the callers
  put one unit of a product in it first (:data:`CHECKOUT`).
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

REGISTER = ("POST", "/api/auth/register/")
CHECKOUT = ("POST", "/api/orders/")
USERNAME_MAX = 150
EMAIL_MAX = 254
_counter = itertools.count(1)
# Distinct per process, so the three runs on one stack (and a re-run) never collide; the tags end in "-", so no
# tag is the start of another.
_RUN = os.environ.get("BULWARK_SCHEMA_RUN") or f"p{os.getpid()}"
_DOT_ATOM_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


def _tagged_username(username: str, tag: str) -> str:
    """``tag`` put before the name's first character (inside any whitespace around it), within 150 characters."""
    core = username.strip()
    lead = username[: len(username) - len(username.lstrip())]
    trail = username[len(username.rstrip()) :]
    room = USERNAME_MAX - len(tag)
    if len(lead) + len(core) + len(trail) > room:  # drop the whitespace first, then the name's tail
        lead, trail = "", ""
        core = core[: max(room, 1)]
    return f"{lead}{tag}{core}{trail}"


def _tagged_email(email: str, tag: str) -> str | None:
    """``tag`` before a plain local part (``tagx@y``), or None when that would not stay a valid address."""
    local, at, domain = email.rpartition("@")
    if not at or not _DOT_ATOM_LOCAL.match(local) or local.startswith(".") or len(email) + len(tag) > EMAIL_MAX:
        return None
    candidate = f"{tag}{local}@{domain}"
    return candidate if len(candidate.partition("@")[0]) <= 64 else None


def registration_made_unique(body: Any) -> Any:
    """The body with a fresh username and e-mail (see the module docstring); anything else is returned as is."""
    if not isinstance(body, dict):
        return body
    tag = f"{_RUN}n{next(_counter)}-"
    body = dict(body)
    if isinstance(body.get("username"), str) and body["username"].strip():
        body["username"] = _tagged_username(body["username"], tag)
    if isinstance(body.get("email"), str):
        body["email"] = _tagged_email(body["email"], tag) or body["email"]
    return body
