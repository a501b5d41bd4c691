"""The JWT attack suite: forged, tampered and malformed tokens are a 401 ``token_not_valid``, never a 500.

Every attack goes over the API (``GET /api/auth/me/`` with a Bearer access token and, where it makes sense,
``POST /api/auth/token/refresh/``) and must get the error envelope with a one-word ``detail.reason``. While
it runs, no connection may leave the process (no key is ever fetched from a ``jku``/``x5u`` header), the
shape checks must refuse a token before PyJWT decodes it, and a hostile ``kid`` must not reach the ring.

Tokens are built from a real token's claims and re-signed with the environment secret under its ``kid``
(``Forge``), so each case differs from an accepted token by the one thing it attacks; the positive
controls below prove that an unmodified re-signed token is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from django.conf import settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from resilience.auth import backend
from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.keys import kid_for_secret
from resilience.auth.ring import ring_cache
from resilience.auth.services import key_rotate, key_stage
from resilience.auth.tokens import access_decode, tokens_for_user
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
REFRESH = "/api/auth/token/refresh/"
ENDPOINTS = [pytest.param(ME, id="me"), pytest.param(REFRESH, id="refresh")]
ATTACKER_SECRET = "attacker-chosen-secret-long-enough-for-hs256-0123456789"
ATTACKER_URL = "http://127.0.0.1:9/keys"  # the discard port: nothing may ever connect to it
LEEWAY = 30  # seconds (JWT_LEEWAY's default, asserted in test_settings_the_suite_relies_on)
MAX_TOKEN = backend.MAX_TOKEN_BYTES
REFRESH_FIELD_MAX = 16384  # well past MAX_TOKEN: the refresh field has no cap of its own

# A bad signature is refused with reason "invalid" (checked exactly in test_bad_signature_reason_is_invalid).
BAD_SIGNATURE = frozenset({"invalid"})


# Hand-made tokens: PyJWT will not write most of these headers.


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def hmac_sign(signing_input: str, key: str | bytes, digest: Callable = hashlib.sha256) -> str:
    key = key.encode() if isinstance(key, str) else key
    return b64(hmac.new(key, signing_input.encode("ascii"), digest).digest())


def raw_jwt(header: Any, payload: Any, key: str | bytes, digest: Callable = hashlib.sha256) -> str:
    """An HMAC-signed JWT with any header and payload at all (dicts, or raw bytes to encode as they are)."""
    encoded_header = b64(header) if isinstance(header, bytes) else b64json(header)
    encoded_payload = b64(payload) if isinstance(payload, bytes) else b64json(payload)
    signing_input = f"{encoded_header}.{encoded_payload}"
    return f"{signing_input}.{hmac_sign(signing_input, key, digest)}"


def unverified_claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@dataclass
class Forge:
    """A user's real claims, and the environment key to re-sign variations of them with."""

    user: Any
    secret: str
    kid: str
    access: dict[str, Any]
    refresh: dict[str, Any]

    def claims(self, endpoint: str) -> dict[str, Any]:
        """A fresh copy of the claims the endpoint accepts (access for /me/, refresh for the refresh view)."""
        return dict(self.refresh if endpoint == REFRESH else self.access)

    def header(self, **changes: Any) -> dict[str, Any]:
        return {"alg": "HS256", "typ": "JWT", "kid": self.kid, **changes}

    def sign(self, claims: Any, *, key: str | bytes | None = None, **header: Any) -> str:
        return raw_jwt(self.header(**header), claims, self.secret if key is None else key)

    def sign_without(self, claims: dict[str, Any], *names: str) -> str:
        return self.sign({name: value for name, value in claims.items() if name not in names})

    def padded(self, claims: dict[str, Any], length: int) -> str:
        """A correctly signed token of at least ``length`` characters (a long claim)."""
        pad = max(0, (length - len(self.sign(claims))) * 3 // 4)
        while len(token := self.sign({**claims, "pad": "x" * pad})) < length:
            pad += 1
        return token


@pytest.fixture
def forge(user) -> Forge:
    secret = settings.BULWARK_CONFIG.jwt_secret
    pair = tokens_for_user(user)
    assert jwt.get_unverified_header(pair["access"])["kid"] == kid_for_secret(secret)
    return Forge(
        user, secret, kid_for_secret(secret), unverified_claims(pair["access"]), unverified_claims(pair["refresh"])
    )


def kidless(claims: dict[str, Any], secret: str) -> str:
    """A token as issued before kids (and iss/aud) existed."""
    legacy = {name: value for name, value in claims.items() if name not in ("iss", "aud")}
    return raw_jwt({"alg": "HS256", "typ": "JWT"}, legacy, secret)


@pytest.fixture
def kidless_until(settings) -> Callable[[Any], None]:
    def set_until(until) -> None:
        settings.BULWARK_JWT = {**settings.BULWARK_JWT, "KIDLESS_UNTIL": until}

    return set_until


# No outbound connection: every attempt from the test's thread to anything but the configured database and
# cache is recorded and refused. Other threads (a telemetry exporter) are not the request's doing.


class OutboundGuard:
    def __init__(self, allowed: set[tuple[str, int]]) -> None:
        self.allowed = allowed
        self.allowed_hosts = {host for host, _ in allowed}
        self.calls: list[tuple[str, Any]] = []
        self.thread = threading.get_ident()

    def permits(self, address: Any) -> bool:
        if threading.get_ident() != self.thread:
            return True
        if isinstance(address, tuple) and len(address) >= 2:
            return (str(address[0]), int(address[1])) in self.allowed
        return False

    def record(self, how: str, target: Any) -> None:
        self.calls.append((how, target))


def _infrastructure() -> set[tuple[str, int]]:
    """host:port of every configured database and of the cache's Redis (the only peers a request may have)."""
    endpoints: set[tuple[str, int]] = set()
    for alias in connections:
        entry = connections[alias].settings_dict
        hosts, ports = str(entry.get("HOST") or "").split(","), str(entry.get("PORT") or "5432").split(",")
        for index, host in enumerate(hosts):
            if host:
                endpoints.add((host, int(ports[min(index, len(ports) - 1)] or 5432)))
    location = settings.CACHES["default"].get("LOCATION") or ""
    for url in location.split(",") if isinstance(location, str) else location:
        if "://" in url:
            parts = urlsplit(url)
            endpoints.add((parts.hostname or "", parts.port or 6379))
    for host, port in list(endpoints):
        if host == "localhost":
            endpoints |= {("127.0.0.1", port), ("::1", port)}
    return endpoints


@pytest.fixture(autouse=True)
def outbound(monkeypatch) -> Iterator[OutboundGuard]:
    guard = OutboundGuard(_infrastructure())
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    create_connection, getaddrinfo = socket.create_connection, socket.getaddrinfo

    def guarded_connect(sock, address):
        if guard.permits(address):
            return connect(sock, address)
        guard.record("socket.connect", address)
        raise ConnectionRefusedError(f"outbound connection to {address!r} refused by the attack suite")

    def guarded_connect_ex(sock, address):
        if guard.permits(address):
            return connect_ex(sock, address)
        guard.record("socket.connect_ex", address)
        return 111  # ECONNREFUSED

    def guarded_create_connection(address, *args, **kwargs):
        if guard.permits(address):
            return create_connection(address, *args, **kwargs)
        guard.record("socket.create_connection", address)
        raise ConnectionRefusedError(f"outbound connection to {address!r} refused by the attack suite")

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        if threading.get_ident() != guard.thread or host in guard.allowed_hosts:
            return getaddrinfo(host, port, *args, **kwargs)
        guard.record("socket.getaddrinfo", (host, port))
        raise socket.gaierror(f"name lookup of {host!r} refused by the attack suite")

    def guarded_urlopen(url, *args, **kwargs):
        guard.record("urllib.request.urlopen", getattr(url, "full_url", url))
        raise urllib.error.URLError("urlopen refused by the attack suite")

    def guarded_http_connect(http_connection):
        guard.record("http.client.HTTPConnection.connect", (http_connection.host, http_connection.port))
        raise ConnectionRefusedError("HTTP connection refused by the attack suite")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(urllib.request, "urlopen", guarded_urlopen)
    monkeypatch.setattr(http.client.HTTPConnection, "connect", guarded_http_connect)
    yield guard
    assert guard.calls == [], f"outbound connections attempted: {guard.calls}"


@pytest.fixture
def attack(api_client, outbound) -> Callable[[str, str], Any]:
    """Send a token to an endpoint; no connection may have been attempted meanwhile."""

    def send(endpoint: str, token: str):
        if endpoint == ME:
            response = api_client.get(ME, HTTP_AUTHORIZATION=f"Bearer {token}")
        else:
            response = api_client.post(REFRESH, {"refresh": token}, format="json")
        assert outbound.calls == [], f"{endpoint}: outbound connections attempted: {outbound.calls}"
        return response

    return send


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """The tokens handed to PyJWT's ``jwt.decode`` by the backend (the spy still decodes them)."""
    calls: list[str] = []
    original = backend.jwt.decode

    def spy(token, *args, **kwargs):
        calls.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(backend.jwt, "decode", spy)
    return calls


def refused(response, reason: str | frozenset[str] | None) -> dict[str, Any]:
    """A 401 token_not_valid envelope with a Bearer challenge and (when given) this reason (or one of these)."""
    error = assert_error(response, 401, "token_not_valid")
    assert response["WWW-Authenticate"].startswith("Bearer"), response["WWW-Authenticate"]
    assert set(error["detail"]) == {"reason"}, error
    assert isinstance(error["detail"]["reason"], str) and error["detail"]["reason"].isidentifier(), error
    if isinstance(reason, frozenset):
        assert error["detail"]["reason"] in reason, error
    elif reason is not None:
        assert error["detail"]["reason"] == reason, error
    return error


def accepted(response, endpoint: str, forge: Forge) -> None:
    assert response.status_code == 200, (response.status_code, response.content[:500])
    if endpoint == ME:
        assert response.json()["id"] == forge.user.id
    else:
        assert set(response.json()) == {"access", "refresh"}


# The guard, the spy and the forge themselves: without these, the assertions below could pass vacuously.


def test_settings_the_suite_relies_on() -> None:
    assert settings.SIMPLE_JWT["LEEWAY"] == LEEWAY
    assert (settings.SIMPLE_JWT["ISSUER"], settings.SIMPLE_JWT["AUDIENCE"]) == ("bulwark", "bulwark-api")
    assert MAX_TOKEN == 8192 < REFRESH_FIELD_MAX


def test_outbound_guard_records_and_refuses_connections(outbound) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(OSError):
        urllib.request.urlopen(ATTACKER_URL, timeout=1)  # refused by the guard
    with pytest.raises(jwt.PyJWKClientError):  # what honouring a jku would do: PyJWT's JWKS client
        jwt.PyJWKClient(ATTACKER_URL).get_signing_key("env-0000000000000000")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert sock.connect_ex(("127.0.0.1", 9)) != 0
    finally:
        sock.close()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("keys.attacker.invalid", 443)
    hows = [how for how, _ in outbound.calls]
    assert hows[0] == "socket.create_connection" and "urllib.request.urlopen" in hows, outbound.calls
    assert hows[-2:] == ["socket.connect_ex", "socket.getaddrinfo"], outbound.calls
    assert ("127.0.0.1", 9) in [target for _, target in outbound.calls]
    outbound.calls.clear()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_reforged_token_is_accepted(attack, forge, decode_calls, endpoint) -> None:
    """The positive control: re-signing a real token's claims by hand changes nothing."""
    accepted(attack(endpoint, forge.sign(forge.claims(endpoint))), endpoint, forge)
    assert decode_calls, "the spy must see the backend's jwt.decode"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": -5}, id="expired_within_leeway"),
        pytest.param({"nbf": 5}, id="nbf_within_leeway"),
        pytest.param({"iat": 5}, id="iat_within_leeway"),
    ],
)
def test_clock_skew_within_the_leeway_is_accepted(attack, forge, endpoint, changes) -> None:
    now = int(time.time())
    claims = {**forge.claims(endpoint), **{name: now + offset for name, offset in changes.items()}}
    accepted(attack(endpoint, forge.sign(claims)), endpoint, forge)


# The attacks. Each: (token maker, expected reason or None, whether PyJWT's decode may be reached).


def alg_none(alg: str, *, trailing_dot: bool) -> Callable[[Forge, dict], str]:
    def make(f: Forge, claims: dict) -> str:
        unsigned = f"{b64json(f.header(alg=alg))}.{b64json(claims)}"
        return unsigned + "." if trailing_dot else unsigned

    return make


def strip_signature(f: Forge, claims: dict) -> str:
    return f.sign(claims).rpartition(".")[0] + "."


def strip_signature_and_dot(f: Forge, claims: dict) -> str:
    return f.sign(claims).rpartition(".")[0]


def change_payload_byte(f: Forge, claims: dict) -> str:
    header, payload, signature = f.sign(claims).split(".")
    data = bytearray(unb64(payload))
    index = data.index(b'"jti":"') + len(b'"jti":"')
    data[index] = ord("0") if data[index] != ord("0") else ord("1")  # still a hex jti: still valid JSON
    return f"{header}.{b64(bytes(data))}.{signature}"


def swap_signature(f: Forge, claims: dict) -> str:
    header, payload, _ = f.sign(claims).split(".")
    other_signature = f.sign({**claims, "jti": "0" * 32}).split(".")[2]
    return f"{header}.{payload}.{other_signature}"


def flip_signature_bit(f: Forge, claims: dict) -> str:
    header, payload, signature = f.sign(claims).split(".")
    data = bytearray(unb64(signature))
    data[0] ^= 1
    return f"{header}.{payload}.{b64(bytes(data))}"


def replace_in_signature(text: str) -> Callable[[Forge, dict], str]:
    def make(f: Forge, claims: dict) -> str:
        token = f.sign(claims)
        return token[:-4] + text + token[-2:]

    return make


def jws_json(*, dots: int) -> Callable[[Forge, dict], str]:
    """RFC 7515's JSON serialization of a correctly signed token (``dots``: 2 reaches the backend's checks)."""

    def make(f: Forge, claims: dict) -> str:
        header, payload, signature = f.sign(claims).split(".")
        document = {"payload": payload, "signatures": [{"protected": header, "signature": signature}]}
        if dots:
            document["note"] = "." * dots
        return json.dumps(document, separators=(",", ":"))

    return make


def with_claims(**changes: Any) -> Callable[[Forge, dict], str]:
    def make(f: Forge, claims: dict) -> str:
        return f.sign({**claims, **changes})

    return make


def claims_in(**offsets: int) -> Callable[[Forge, dict], str]:
    def make(f: Forge, claims: dict) -> str:
        now = int(time.time())
        return f.sign({**claims, **{name: now + offset for name, offset in offsets.items()}})

    return make


def without(*names: str) -> Callable[[Forge, dict], str]:
    return lambda f, claims: f.sign_without(claims, *names)


def with_header(**changes: Any) -> Callable[[Forge, dict], str]:
    """A header the backend refuses, signed with the attacker's own secret (what jku/jwk would vouch for)."""
    return lambda f, claims: f.sign(claims, key=ATTACKER_SECRET, **changes)


BAD_SIGNATURES = [
    (lambda f, c: f.sign(c, key=ATTACKER_SECRET), "right_kid_other_secret"),
    (change_payload_byte, "payload_byte_changed"),
    (swap_signature, "signature_from_another_token"),
    (flip_signature_bit, "signature_bit_flipped"),
]

ATTACKS = [
    # alg: none in every spelling, and other algorithms than the key's
    *[
        pytest.param(alg_none(alg, trailing_dot=dot), "malformed", False, id=f"alg_{alg}_unsigned{suffix}")
        for alg in ("none", "None", "noNE", "NONE")
        for dot, suffix in ((True, "_trailing_dot"), (False, ""))
    ],
    pytest.param(
        lambda f, c: f"{b64json(f.header(alg='none'))}.{b64json(c)}.{b64(b'sig')}",
        "invalid",
        False,
        id="alg_none_with_junk_signature",
    ),
    pytest.param(
        lambda f, c: f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(c)}.{b64(b'sig')}",
        "kid_missing",
        False,
        id="alg_none_without_kid",
    ),
    pytest.param(lambda f, c: raw_jwt({"typ": "JWT", "kid": f.kid}, c, f.secret), "malformed", False, id="alg_missing"),
    pytest.param(lambda f, c: f.sign(c, alg=None), "malformed", False, id="alg_null"),
    pytest.param(lambda f, c: f.sign(c, alg=["HS256"]), "malformed", False, id="alg_array"),
    pytest.param(
        lambda f, c: raw_jwt(f.header(alg="HS512"), c, f.secret, hashlib.sha512), "invalid", False, id="alg_HS512"
    ),
    pytest.param(lambda f, c: f.sign(c, alg="HS384"), "invalid", False, id="alg_HS384"),
    pytest.param(lambda f, c: f.sign(c, alg="EdDSA"), "invalid", False, id="alg_EdDSA_on_hs256_key"),
    pytest.param(lambda f, c: f.sign(c, alg="RS256"), "invalid", False, id="alg_RS256_on_hs256_key"),
    pytest.param(lambda f, c: f.sign(c, alg="hs256"), "invalid", False, id="alg_lowercase"),
    pytest.param(lambda f, c: f.sign(c, alg="HS256 "), "invalid", False, id="alg_trailing_space"),
    # signatures
    pytest.param(strip_signature, "malformed", False, id="signature_empty"),
    pytest.param(strip_signature_and_dot, "malformed", False, id="signature_and_dot_stripped"),
    *[pytest.param(make, BAD_SIGNATURE, True, id=name) for make, name in BAD_SIGNATURES],
    # headers that name or carry a key, or that the backend does not understand
    pytest.param(with_header(jku=ATTACKER_URL), "malformed", False, id="header_jku"),
    pytest.param(with_header(jku="https://keys.attacker.invalid/jwks.json"), "malformed", False, id="header_jku_dns"),
    pytest.param(with_header(x5u=ATTACKER_URL), "malformed", False, id="header_x5u"),
    pytest.param(
        with_header(jwk={"kty": "oct", "k": b64(ATTACKER_SECRET.encode()), "kid": "attacker"}),
        "malformed",
        False,
        id="header_jwk_embedded_key",
    ),
    pytest.param(with_header(x5c=["MIIBszCCAVmgAwIBAgIUattacker"]), "malformed", False, id="header_x5c"),
    pytest.param(
        with_header(crit=["urn:bulwark:unknown"], **{"urn:bulwark:unknown": True}),
        "malformed",
        False,
        id="header_unknown_crit",
    ),
    pytest.param(with_header(b64=False), "malformed", False, id="header_b64_false"),
    pytest.param(lambda f, c: f.sign(c, typ="JOSE"), "malformed", False, id="header_typ_not_jwt"),
    pytest.param(lambda f, c: raw_jwt([f.header()], c, f.secret), "malformed", False, id="header_json_array"),
    pytest.param(lambda f, c: raw_jwt(b"\xff\xfe\x00", c, f.secret), "malformed", False, id="header_not_utf8"),
    pytest.param(
        lambda f, c: raw_jwt(b"[" * 150 + b"]" * 150, c, f.secret), "malformed", False, id="header_nested_150_deep"
    ),
    pytest.param(lambda f, c: "a." + f.sign(c).split(".", 1)[1], "malformed", False, id="header_not_base64_length"),
    # payloads that are not a claims object (correctly signed)
    pytest.param(lambda f, c: f.sign(b"not json"), "malformed", True, id="payload_not_json"),
    pytest.param(lambda f, c: f.sign([c]), "malformed", True, id="payload_json_array"),
    # time claims
    pytest.param(claims_in(exp=-3600), "expired", True, id="expired_an_hour_ago"),
    pytest.param(claims_in(exp=-(LEEWAY + 30)), "expired", True, id="expired_beyond_leeway"),
    pytest.param(claims_in(nbf=600), "invalid", True, id="nbf_10_minutes_ahead"),
    pytest.param(claims_in(iat=600), "invalid", True, id="iat_10_minutes_ahead"),
    pytest.param(with_claims(exp="tomorrow"), "malformed", True, id="exp_not_a_number"),
    # required claims
    *[
        pytest.param(without(name), "malformed", True, id=f"missing_{name}")
        for name in ("exp", "iat", "jti", "token_type", "user_id", "iss", "aud")
    ],
    pytest.param(with_claims(user_id=None), "malformed", True, id="user_id_null"),
    pytest.param(with_claims(iss="bulwark-staging"), "invalid", True, id="iss_wrong"),
    pytest.param(with_claims(aud="another-api"), "invalid", True, id="aud_wrong"),
    pytest.param(with_claims(aud=["another-api", "third-api"]), "invalid", True, id="aud_list_without_ours"),
    pytest.param(with_claims(token_type="id"), "wrong_type", True, id="token_type_unknown"),
    # user_id of the wrong type or naming no one (validly signed: only a key holder could do this)
    pytest.param(with_claims(user_id=[1]), "malformed", True, id="user_id_list"),
    pytest.param(with_claims(user_id={"id": 1}), "malformed", True, id="user_id_object"),
    pytest.param(with_claims(user_id=1.5), "malformed", True, id="user_id_float"),
    pytest.param(with_claims(user_id=10**30), "user_unknown", True, id="user_id_huge"),
    pytest.param(with_claims(user_id=-1), "user_unknown", True, id="user_id_negative"),
    pytest.param(with_claims(user_id="abc"), "user_unknown", True, id="user_id_not_a_number"),
    pytest.param(with_claims(user_id=""), "user_unknown", True, id="user_id_empty_string"),
    pytest.param(with_claims(user_id="0x1"), "user_unknown", True, id="user_id_hex_text"),
    # size and characters: refused by the shape checks, before any decoding
    pytest.param(lambda f, c: f.padded(c, MAX_TOKEN + 1), "too_large", False, id="just_over_8kb"),
    pytest.param(lambda f, c: f.padded(c, REFRESH_FIELD_MAX - 200), "too_large", False, id="about_16kb"),
    pytest.param(replace_in_signature("+"), "malformed", False, id="char_plus"),
    pytest.param(replace_in_signature("/"), "malformed", False, id="char_slash"),
    pytest.param(lambda f, c: f.sign(c) + "==", "malformed", False, id="char_padding"),
    pytest.param(replace_in_signature(" "), "malformed", False, id="char_space"),
    pytest.param(replace_in_signature("\t"), "malformed", False, id="char_tab"),
    pytest.param(replace_in_signature("é"), "malformed", False, id="char_non_ascii"),
    pytest.param(replace_in_signature("\u200b"), "malformed", False, id="char_zero_width_space"),
    pytest.param(jws_json(dots=0), "malformed", False, id="jws_json_serialization"),
    pytest.param(jws_json(dots=2), "malformed", False, id="jws_json_serialization_two_dots"),
    pytest.param(lambda f, c: f.sign(c) + ".", "malformed", False, id="four_parts"),
    pytest.param(lambda f, c: f.sign(c) + "." + f.sign(c), "malformed", False, id="two_tokens_joined"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("make", "reason", "decodes"), ATTACKS)
def test_attack_is_refused(attack, forge, decode_calls, endpoint, make, reason, decodes) -> None:
    token = make(forge, forge.claims(endpoint))
    decode_calls.clear()
    refused(attack(endpoint, token), reason)
    if decodes:
        assert decode_calls, "expected to get as far as the signature and claim checks"
    else:
        assert decode_calls == [], "refused by PyJWT, not by the shape checks that must come first"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "make",
    [
        *[pytest.param(make, id=name) for make, name in BAD_SIGNATURES],
        pytest.param(lambda f, c: kidless(c, ATTACKER_SECRET), id="kidless_other_secret"),
    ],
)
def test_bad_signature_reason_is_invalid(attack, forge, kidless_until, endpoint, make) -> None:
    kidless_until(timezone.now() + timedelta(days=1))
    refused(attack(endpoint, make(forge, forge.claims(endpoint))), "invalid")


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param(ME, id="me"),
        pytest.param(REFRESH, id="refresh"),
    ],
)
def test_token_over_the_refresh_field_cap_is_too_large(attack, forge, decode_calls, endpoint) -> None:
    token = forge.padded(forge.claims(endpoint), REFRESH_FIELD_MAX + 1)
    refused(attack(endpoint, token), "too_large")
    assert decode_calls == []


# Token types across endpoints.


def test_refresh_token_as_bearer_is_wrong_type(attack, forge) -> None:
    refused(attack(ME, tokens_for_user(forge.user)["refresh"]), "wrong_type")


def test_access_token_to_the_refresh_endpoint_is_wrong_type(attack, forge) -> None:
    refused(attack(REFRESH, tokens_for_user(forge.user)["access"]), "wrong_type")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_claims_of_the_other_type_reforged_are_wrong_type(attack, forge, endpoint) -> None:
    other = forge.claims(ME if endpoint == REFRESH else REFRESH)
    refused(attack(endpoint, forge.sign(other)), "wrong_type")


# kid hygiene: a kid of a shape this service never issues is refused without touching the ring or the database.

HOSTILE_KIDS = [
    pytest.param("../../dev/null", "key_unknown", id="path_traversal"),
    pytest.param("' OR '1'='1", "key_unknown", id="sql_injection"),
    pytest.param("env-0123456789abcdef\n", "key_unknown", id="newline_suffix"),
    pytest.param("ENV-0123456789ABCDEF", "key_unknown", id="uppercase"),
    pytest.param("", "key_unknown", id="empty"),
    pytest.param("k" * 400, "malformed", id="400_chars_header_too_long"),
    pytest.param("k" * 10_000, "too_large", id="10000_chars"),
    pytest.param(123, "malformed", id="number"),
    pytest.param(None, "malformed", id="null"),
    pytest.param(True, "malformed", id="bool"),
    pytest.param(["env-0123456789abcdef"], "malformed", id="array"),
    pytest.param({"kid": "env-0123456789abcdef"}, "malformed", id="object"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("kid", "reason"), HOSTILE_KIDS)
def test_hostile_kid_is_refused_without_a_lookup(
    attack, forge, decode_calls, django_assert_max_num_queries, endpoint, kid, reason
) -> None:
    token = forge.sign(forge.claims(endpoint), kid=kid)
    ring_cache.current()  # warm: the request itself must need no read
    reads = ring_cache.reads
    with django_assert_max_num_queries(1):
        response = attack(endpoint, token)
    refused(response, reason)
    assert ring_cache.reads == reads
    assert decode_calls == []


# Inside a test (itself a transaction) each ring read is wrapped in a savepoint, so a failed read cannot abort it.
SAVEPOINT_SQL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


def test_random_well_formed_kids_cost_at_most_two_ring_reads(settings, forge) -> None:
    """1 000 unknown kids: one read to load the ring, one rate-limited re-read for the first unknown kid (a read asks
    for the table's fingerprint, and only when that changed for it again with the rows: here once, to load)."""
    settings.BULWARK_JWT = {**settings.BULWARK_JWT, "RING_REFRESH_SECONDS": 3600.0}
    assert settings.BULWARK_JWT["UNKNOWN_KID_REFRESH_SECONDS"] >= 5
    rng = random.Random(1000)  # deterministic kids, not secrets
    tokens = [forge.sign(forge.access, kid=f"db-{rng.getrandbits(64):016x}") for _ in range(1000)]
    ring_cache.reset()
    reads = ring_cache.reads
    reasons = []
    with CaptureQueriesContext(connection) as queries:
        for token in tokens:
            with pytest.raises(TokenNotValidError) as caught:
                access_decode(token)
            reasons.append(caught.value.reason)
    assert set(reasons) == {"key_unknown"}
    assert 1 <= ring_cache.reads - reads <= 2
    selects = [query["sql"] for query in queries.captured_queries if not query["sql"].startswith(SAVEPOINT_SQL)]
    fingerprints = [sql for sql in selects if "md5" in sql]
    assert 2 <= len(fingerprints) <= 3 and len(selects) - len(fingerprints) == 1, selects


# Tokens without a kid: refused, except with JWT_SECRET inside the migration window.


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_kidless_token_is_refused_by_default(attack, forge, kidless_until, endpoint) -> None:
    kidless_until(None)
    refused(attack(endpoint, kidless(forge.claims(endpoint), forge.secret)), "kid_missing")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_kidless_token_with_jwt_secret_is_accepted_inside_the_window(attack, forge, kidless_until, endpoint) -> None:
    kidless_until(timezone.now() + timedelta(days=1))
    accepted(attack(endpoint, kidless(forge.claims(endpoint), forge.secret)), endpoint, forge)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda c: kidless(c, ATTACKER_SECRET), BAD_SIGNATURE, id="other_secret"),
        pytest.param(
            lambda c: raw_jwt({"alg": "HS512", "typ": "JWT"}, c, settings.BULWARK_CONFIG.jwt_secret, hashlib.sha512),
            "invalid",
            id="alg_HS512",
        ),
        pytest.param(lambda c: f"{b64json({'alg': 'none'})}.{b64json(c)}.", "malformed", id="alg_none"),
        pytest.param(
            lambda c: kidless({**c, "exp": int(time.time()) - 3600}, settings.BULWARK_CONFIG.jwt_secret),
            "expired",
            id="expired",
        ),
        pytest.param(
            lambda c: kidless({k: v for k, v in c.items() if k != "jti"}, settings.BULWARK_CONFIG.jwt_secret),
            "malformed",
            id="missing_jti",
        ),
    ],
)
def test_kidless_token_inside_the_window_is_still_verified(
    attack, forge, kidless_until, endpoint, make, reason
) -> None:
    kidless_until(timezone.now() + timedelta(days=1))
    refused(attack(endpoint, make(forge.claims(endpoint))), reason)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_kidless_token_is_refused_after_the_window(attack, forge, kidless_until, endpoint) -> None:
    kidless_until(timezone.now() - timedelta(seconds=1))
    refused(attack(endpoint, kidless(forge.claims(endpoint), forge.secret)), "kid_missing")


# An EdDSA key in the ring: its public key is no HMAC secret, and its kid pins EdDSA.


@pytest.fixture
def eddsa(settings, user, django_capture_on_commit_callbacks) -> Iterator[Forge]:
    """The ring signs with a new EdDSA key; a Forge holding its public PEM (all an attacker can have)."""
    settings.BULWARK_JWT = {**settings.BULWARK_JWT, "JWKS_MAX_AGE": 0}
    ring_cache.current()  # cached: only the on-commit invalidation below makes this process see the new key
    # The test runs inside a transaction: run the services' on-commit hooks (ring_cache.invalidate) by hand.
    with django_capture_on_commit_callbacks(execute=True) as staged_hooks:
        staged = key_stage(algorithm="EdDSA")
    with django_capture_on_commit_callbacks(execute=True) as rotated_hooks:
        active = key_rotate()
    assert staged_hooks and rotated_hooks
    assert active.kid == staged.kid and staged.public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert ring_cache.current().signer.kid == staged.kid
    pair = tokens_for_user(user)
    assert jwt.get_unverified_header(pair["access"]) == {"alg": "EdDSA", "typ": "JWT", "kid": staged.kid}
    yield Forge(
        user, staged.public_key, staged.kid, unverified_claims(pair["access"]), unverified_claims(pair["refresh"])
    )
    ring_cache.reset()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_eddsa_signed_token_is_accepted(attack, eddsa, endpoint) -> None:
    pair = tokens_for_user(eddsa.user)
    accepted(attack(endpoint, pair["refresh"] if endpoint == REFRESH else pair["access"]), endpoint, eddsa)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("header", "reason", "decodes"),
    [
        pytest.param({"alg": "HS256"}, "invalid", False, id="HS256_keyed_with_public_pem"),
        pytest.param({"alg": "EdDSA"}, BAD_SIGNATURE, True, id="EdDSA_header_hmac_with_public_pem"),
        pytest.param({"alg": "none"}, "invalid", False, id="alg_none"),
        pytest.param({"alg": "HS256", "jwk": {"kty": "oct", "k": "QUJD"}}, "malformed", False, id="embedded_jwk"),
    ],
)
def test_public_key_as_hmac_secret_is_refused(attack, eddsa, decode_calls, endpoint, header, reason, decodes) -> None:
    """The algorithm-confusion attack: HMAC keyed with the published public key, under that key's kid."""
    token = eddsa.sign(eddsa.claims(endpoint), **header)  # eddsa.secret is the public PEM
    decode_calls.clear()
    refused(attack(endpoint, token), reason)
    assert bool(decode_calls) is decodes


# Whatever arrives, never a 500.

GARBAGE_BEARER = [
    pytest.param("Bearer ", "malformed", id="empty"),
    pytest.param("Bearer", "malformed", id="scheme_only"),
    pytest.param("Bearer a.b", "malformed", id="two_parts"),
    pytest.param("Bearer ..", "malformed", id="two_dots"),
    pytest.param("Bearer ...", "malformed", id="three_dots"),
    pytest.param("Bearer a.b.c", "malformed", id="three_letters"),
    pytest.param("Bearer eyJ.eyJ.eyJ", "malformed", id="truncated_json"),
    pytest.param("Bearer ☃.☃.☃", "malformed", id="unicode"),
    pytest.param("Bearer \u0000.\u0000.\u0000", "malformed", id="nul_bytes"),
    pytest.param("Bearer null", "malformed", id="null"),
    pytest.param("Bearer [object Object]", "malformed", id="js_object"),
    pytest.param("Bearer Bearer a.b.c", "malformed", id="scheme_twice"),
    pytest.param("Bearer " + "." * (MAX_TOKEN + 1), "too_large", id="dots_over_8kb"),
    pytest.param("Bearer " + "A" * 100_000, "too_large", id="100kb"),
]


@pytest.mark.parametrize(("authorization", "reason"), GARBAGE_BEARER)
def test_garbage_bearer_is_refused(api_client, outbound, authorization, reason) -> None:
    refused(api_client.get(ME, HTTP_AUTHORIZATION=authorization), reason)
    assert outbound.calls == []


@pytest.mark.parametrize(
    ("refresh", "reason"),
    [
        pytest.param("a.b", "malformed", id="two_parts"),
        pytest.param("...", "malformed", id="three_dots"),
        pytest.param("a.b.c", "malformed", id="three_letters"),
        pytest.param("☃.☃.☃", "malformed", id="unicode"),
        pytest.param("two words.x.y", "malformed", id="space"),
        pytest.param("." * (MAX_TOKEN + 1), "too_large", id="dots_over_8kb"),
    ],
)
def test_garbage_refresh_is_refused(attack, refresh, reason) -> None:
    refused(attack(REFRESH, refresh), reason)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"refresh": ""}, id="empty"),
        pytest.param({"refresh": None}, id="null"),
        pytest.param({"refresh": ["a.b.c"]}, id="list"),
        pytest.param({"refresh": {"payload": "e30"}}, id="object"),
        pytest.param({"refresh": True}, id="bool"),
        pytest.param({"refresh": 123}, id="number"),  # a JSON number is no string: the schema says string
        pytest.param({}, id="missing"),
    ],
)
def test_refresh_that_is_not_a_string_is_a_validation_error(api_client, outbound, body) -> None:
    assert_error(api_client.post(REFRESH, body, format="json"), 400, "validation_error")
    assert outbound.calls == []
