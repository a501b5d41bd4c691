"""Managing the ring (stage, rotate, retire, revoke, re-encrypt): command, admin, JWKS; log out everywhere."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import jwt
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from resilience.auth.crypto import KeyDecryptionError, secret_decrypt
from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.keys import kid_for_secret
from resilience.auth.models import KeyAuditEntry, SigningKey
from resilience.auth.ring import ring_cache
from resilience.auth.services import (
    KeyRingError,
    key_retire,
    key_retire_delay,
    key_revoke,
    key_rotate,
    key_stage,
    keys_reencrypt,
    user_logout_everywhere,
)
from resilience.auth.tokens import access_decode, refresh_rotate, tokens_for_user
from resilience.staff.otp import otp_enroll
from tests.factories import UserFactory
from tests.second_factor import verified_login
from tests.system.conftest import ROOT

pytestmark = pytest.mark.django_db


def env_kid() -> str:
    return kid_for_secret(settings.BULWARK_CONFIG.jwt_secret)


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def fresh_tokens(user) -> dict[str, str]:
    ring_cache.reset()  # on_commit hooks do not run inside a test's transaction
    return tokens_for_user(user)


@pytest.fixture
def no_jwks_wait(settings):
    settings.BULWARK_JWT = {**settings.BULWARK_JWT, "JWKS_MAX_AGE": 0}


# --- rotation -------------------------------------------------------------------------------------------------


def test_first_rotation_takes_over_from_jwt_secret_without_logging_anyone_out(user) -> None:
    before = fresh_tokens(user)
    assert kid_of(before["access"]) == env_kid()

    new = key_rotate(reason="quarterly")
    after = fresh_tokens(user)
    assert kid_of(after["access"]) == new.kid != env_kid()
    assert access_decode(before["access"])  # issued before the rotation: still valid
    refreshed = refresh_rotate(before["refresh"])
    assert kid_of(refreshed["access"]) == kid_of(refreshed["refresh"]) == new.kid

    env_row = SigningKey.objects.get(kid=env_kid())
    assert (env_row.source, env_row.state, env_row.secret_encrypted) == ("environment", "previous", "")
    audit = list(KeyAuditEntry.objects.order_by("id").values_list("kid", "action", "previous_state", "state", "reason"))
    assert audit == [
        (env_kid(), "rotate", "active", "previous", "quarterly"),
        (new.kid, "rotate", "", "active", "quarterly"),
    ]


def test_every_rotation_keeps_exactly_one_active_key() -> None:
    kids = [key_rotate().kid for _ in range(3)]
    assert list(SigningKey.objects.filter(state="active").values_list("kid", flat=True)) == [kids[-1]]
    assert set(SigningKey.objects.filter(state="previous").values_list("kid", flat=True)) == {env_kid(), *kids[:2]}


def test_the_database_refuses_a_second_active_key() -> None:
    key_rotate()
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.create(kid="db-00000000000000ff", state="active", secret_encrypted="x")


def test_environment_rows_can_never_sign() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.create(kid="env-00000000000000ff", state="active", source="environment")


def test_a_staged_key_is_promoted_by_the_next_rotation(no_jwks_wait) -> None:
    staged = key_stage(algorithm="EdDSA")
    assert staged.state == "next" and staged.public_key.startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(KeyRingError, match="already staged"):
        key_stage()
    assert key_rotate().kid == staged.kid


def test_an_asymmetric_key_must_be_published_for_the_jwks_max_age_before_it_signs() -> None:
    with pytest.raises(KeyRingError, match="stage it"):
        key_rotate(algorithm="EdDSA")
    staged = key_stage(algorithm="EdDSA")
    with pytest.raises(KeyRingError, match="published for less than JWT_JWKS_MAX_AGE"):
        key_rotate()
    SigningKey.objects.filter(pk=staged.pk).update(created_at=timezone.now() - timedelta(minutes=6))
    assert key_rotate().kid == staged.kid


def test_eddsa_tokens_verify_with_the_published_key_only(user, no_jwks_wait, client) -> None:
    key_stage(algorithm="EdDSA")
    active = key_rotate()
    tokens = fresh_tokens(user)
    assert jwt.get_unverified_header(tokens["access"])["alg"] == "EdDSA"
    assert access_decode(tokens["access"])["user_id"] == str(user.id)

    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=0"
    (jwk,) = response.json()["keys"]
    assert (jwk["kid"], jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == (
        active.kid,
        "OKP",
        "Ed25519",
        "EdDSA",
        "sig",
    )
    assert "d" not in jwk
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(tokens["access"], public, algorithms=["EdDSA"], audience="bulwark-api", issuer="bulwark")
    assert claims["token_type"] == "access"


def test_the_jwks_lists_next_active_and_previous_asymmetric_keys_never_hs_or_retired(client, no_jwks_wait) -> None:
    key_stage(algorithm="EdDSA")
    first = key_rotate()
    key_stage(algorithm="EdDSA")
    second = key_rotate()
    staged = key_stage(algorithm="EdDSA")
    key_rotate(algorithm="HS256", emergency=True)  # HS key active: not published
    ring_cache.reset()
    kids = {jwk["kid"] for jwk in client.get("/.well-known/jwks.json").json()["keys"]}
    assert kids == {first.kid, second.kid, staged.kid}
    SigningKey.objects.filter(kid=first.kid).update(deactivated_at=timezone.now() - key_retire_delay())
    ring_cache.reset()
    body = client.get("/.well-known/jwks.json").content.decode()
    assert first.kid not in body  # past its retirement
    assert all(secret not in body for secret in ("PRIVATE", '"d"', '"k"'))


def test_the_jwks_refuses_other_methods_with_json(client) -> None:
    response = client.post("/.well-known/jwks.json")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# --- retire and revoke ----------------------------------------------------------------------------------------


def test_a_previous_key_cannot_be_retired_before_its_tokens_expired(user) -> None:
    old = fresh_tokens(user)
    key_rotate()
    with pytest.raises(KeyRingError, match="can be retired from"):
        key_retire(kid=env_kid())
    later = timezone.now() + key_retire_delay() + timedelta(seconds=1)
    key_retire(kid=env_kid(), now=later, reason="expired")
    ring_cache.reset()
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(old["access"])
    assert refused.value.reason == "key_retired"


def test_a_previous_key_counts_as_retired_once_its_time_has_passed_even_if_nobody_retires_it(user) -> None:
    first = key_rotate()
    old = fresh_tokens(user)
    key_rotate()
    SigningKey.objects.filter(kid=first.kid).update(deactivated_at=timezone.now() - key_retire_delay())
    ring_cache.reset()
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(old["access"])
    assert refused.value.reason == "key_retired"


def test_the_active_key_cannot_be_retired_and_retired_keys_stay_retired() -> None:
    active = key_rotate()
    with pytest.raises(KeyRingError, match="ACTIVE key: rotate first"):
        key_retire(kid=active.kid)
    staged = key_stage()
    key_retire(kid=staged.kid)  # a NEXT key never signed: it may go at any time
    with pytest.raises(KeyRingError, match="already retired"):
        key_retire(kid=staged.kid)
    with pytest.raises(KeyRingError, match="No key"):
        key_retire(kid="db-0000000000000000")


def test_revoking_the_active_key_activates_a_successor_first(user) -> None:
    active = key_rotate()
    old = fresh_tokens(user)
    key_revoke(kid=active.kid, reason="leaked")
    assert SigningKey.objects.get(kid=active.kid).state == "revoked"
    successor = SigningKey.objects.get(state="active")
    new = fresh_tokens(user)
    assert kid_of(new["access"]) == successor.kid
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(old["access"])
    assert refused.value.reason == "key_revoked"
    with pytest.raises(TokenNotValidError):
        refresh_rotate(old["refresh"])
    with pytest.raises(KeyRingError, match="already revoked"):
        key_revoke(kid=active.kid)
    assert access_decode(new["access"])


def test_revoking_jwt_secret_while_it_signs_hands_signing_to_the_database(user) -> None:
    old = fresh_tokens(user)
    key_revoke(kid=env_kid(), reason="leaked")
    assert SigningKey.objects.get(kid=env_kid()).state == "revoked"
    new = fresh_tokens(user)
    assert kid_of(new["access"]).startswith("db-")
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(old["access"])
    assert refused.value.reason == "key_revoked"


def test_a_revoked_key_can_never_become_active_again(no_jwks_wait) -> None:
    staged = key_stage()
    key_revoke(kid=staged.kid)
    rotated = key_rotate()
    assert rotated.kid != staged.kid and SigningKey.objects.get(kid=staged.kid).state == "revoked"


# --- secrets --------------------------------------------------------------------------------------------------


def test_secrets_are_generated_long_and_stored_encrypted(no_jwks_wait) -> None:
    hs = key_rotate()
    secret = secret_decrypt(hs.secret_encrypted)
    assert len(secret) >= 32
    assert secret.decode() not in hs.secret_encrypted
    ed = key_stage(algorithm="EdDSA")
    assert b"PRIVATE KEY" in secret_decrypt(ed.secret_encrypted)
    assert "PRIVATE" not in ed.secret_encrypted


def test_imported_secrets_must_be_long_enough() -> None:
    with pytest.raises(KeyRingError, match="at least 32 bytes"):
        key_stage(secret="short")
    with pytest.raises(KeyRingError, match="Only HS256"):
        key_stage(algorithm="EdDSA", secret="x" * 40)
    staged = key_stage(secret="an-imported-vault-secret-of-enough-length-0123")
    assert secret_decrypt(staged.secret_encrypted) == b"an-imported-vault-secret-of-enough-length-0123"


def test_keys_survive_a_secret_key_rotation_through_the_fallbacks(user, settings) -> None:
    key_rotate()
    issued = fresh_tokens(user)
    old_secret_key = settings.SECRET_KEY
    settings.SECRET_KEY = "n" * 40 + "ew-secret-key-after-rotation"
    settings.SECRET_KEY_FALLBACKS = [old_secret_key]
    ring_cache.reset()
    assert access_decode(issued["access"])  # the stored key still decrypts
    assert keys_reencrypt() == 1
    settings.SECRET_KEY_FALLBACKS = []
    ring_cache.reset()
    assert access_decode(issued["access"])  # re-encrypted under the new SECRET_KEY
    settings.SECRET_KEY = old_secret_key
    with pytest.raises(KeyDecryptionError):
        secret_decrypt(SigningKey.objects.get(state="active").secret_encrypted)


def test_no_secret_is_logged(user, caplog, no_jwks_wait) -> None:
    caplog.set_level(logging.DEBUG)
    key_stage(algorithm="EdDSA")
    active = key_rotate()
    key_revoke(kid=active.kid)
    for key in SigningKey.objects.exclude(secret_encrypted=""):
        secret = secret_decrypt(key.secret_encrypted).decode()
        assert secret not in caplog.text and key.secret_encrypted not in caplog.text
    assert settings.BULWARK_CONFIG.jwt_secret not in caplog.text
    assert "revoke" in caplog.text


# --- log out everywhere ---------------------------------------------------------------------------------------


def test_log_out_everywhere_refuses_every_token_of_that_user_only(user, api_client) -> None:
    first, second = tokens_for_user(user), tokens_for_user(user)
    bystander = UserFactory()
    theirs = tokens_for_user(bystander)
    response = api_client.post("/api/auth/logout/all/", HTTP_AUTHORIZATION=f"Bearer {first['access']}")
    assert response.status_code == 204
    for tokens in (first, second):
        me = api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
        assert me.status_code == 401 and me.json()["error"]["detail"] == {"reason": "logged_out"}
        refreshed = api_client.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
        assert refreshed.status_code == 401
    assert api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {theirs['access']}").status_code == 200
    again = tokens_for_user(user)  # a new login works
    assert api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {again['access']}").status_code == 200


def test_log_out_everywhere_needs_a_valid_token(api_client) -> None:
    response = api_client.post("/api/auth/logout/all/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


def test_log_out_everywhere_blacklists_outstanding_refresh_tokens(user) -> None:
    tokens = tokens_for_user(user)
    assert user_logout_everywhere(user=user) == 1
    jti = jwt.decode(tokens["refresh"], options={"verify_signature": False})["jti"]
    assert BlacklistedToken.objects.filter(token__jti=jti).exists()
    with pytest.raises(TokenNotValidError) as refused:
        refresh_rotate(tokens["refresh"])
    assert refused.value.reason == "blacklisted"


# --- the command ----------------------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("rotate_jwt_key", *args, stdout=out)
    return out.getvalue()


def test_command_rotates_lists_and_explains_refusals() -> None:
    assert "(signs)" in run("--list") and env_kid() in run("--list")
    output = run("--reason", "drill")
    new_kid = SigningKey.objects.get(state="active").kid
    assert new_kid in output
    listing = run("--list")
    assert f"{new_kid}" in listing and "previous" in listing
    with pytest.raises(CommandError, match="can be retired from"):
        run("--retire", env_kid())
    with pytest.raises(CommandError, match="No key"):
        run("--revoke", "../../etc/passwd")
    assert "revoked" in run("--revoke", env_kid())
    assert KeyAuditEntry.objects.filter(kid=new_kid, reason="drill").exists()


def test_command_exit_status_and_message_as_a_process() -> None:
    db = connection.settings_dict  # the test database (migrated), reached by the command as a separate process
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_REPLICA_URLS"}
    env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    completed = subprocess.run(
        [sys.executable, "manage.py", "rotate_jwt_key", "--retire", "db-0000000000000000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "DJANGO_SETTINGS_MODULE": "settings.test"},
        timeout=60,
    )
    assert completed.returncode != 0
    assert "No key 'db-0000000000000000' in the ring." in completed.stderr
    assert "Traceback" not in completed.stderr


# --- the admin ------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    admin = UserFactory(is_staff=True, is_superuser=True)
    verified_login(client, admin, otp_enroll(user=admin))  # changing keys needs a verified second factor
    return client


def test_admin_lists_keys_without_material_and_never_offers_delete(admin_client, no_jwks_wait) -> None:
    key_stage(algorithm="EdDSA")
    active = key_rotate()
    secret = secret_decrypt(active.secret_encrypted).decode()
    page = admin_client.get("/admin/resilience/signingkey/").content.decode()
    assert active.kid in page and "delete_selected" not in page
    detail = admin_client.get(f"/admin/resilience/signingkey/{active.pk}/change/").content.decode()
    assert active.kid in detail
    for text in (page, detail):
        assert secret not in text and active.secret_encrypted not in text and "PRIVATE" not in text
    assert admin_client.post(f"/admin/resilience/signingkey/{active.pk}/delete/", {"post": "yes"}).status_code == 403


def test_admin_add_form_takes_a_secret_write_only(admin_client) -> None:
    form = admin_client.get("/admin/resilience/signingkey/add/").content.decode()
    assert 'type="password"' in form
    imported = "imported-from-the-vault-0123456789-abcdefghij"
    response = admin_client.post(
        "/admin/resilience/signingkey/add/", {"algorithm": "HS256", "secret": imported, "reason": "vault"}
    )
    assert response.status_code == 302
    staged = SigningKey.objects.get(state="next")
    assert secret_decrypt(staged.secret_encrypted).decode() == imported
    assert imported not in admin_client.get(f"/admin/resilience/signingkey/{staged.pk}/change/").content.decode()
    short = admin_client.post("/admin/resilience/signingkey/add/", {"algorithm": "HS256", "secret": "short"})
    assert short.status_code == 200 and "at least 32 bytes" in short.content.decode()
    assert KeyAuditEntry.objects.filter(kid=staged.kid, action="stage", reason="vault").exists()


def test_admin_actions_rotate_retire_and_revoke(admin_client, user) -> None:
    key_rotate()
    active = SigningKey.objects.get(state="active")
    changelist = "/admin/resilience/signingkey/"
    response = admin_client.post(changelist, {"action": "rotate", "_selected_action": [active.pk]}, follow=True)
    assert "is now ACTIVE" in response.content.decode()
    active.refresh_from_db()
    assert active.state == "previous"

    refused = admin_client.post(changelist, {"action": "retire", "_selected_action": [active.pk]}, follow=True)
    assert "can be retired from" in refused.content.decode()
    assert SigningKey.objects.get(pk=active.pk).state == "previous"

    admin_client.post(changelist, {"action": "revoke", "_selected_action": [active.pk]}, follow=True)
    assert SigningKey.objects.get(pk=active.pk).state == "revoked"
    revoked = KeyAuditEntry.objects.get(kid=active.kid, action="revoke")
    assert revoked.actor_name.startswith("user") and revoked.reason == "admin revoke"


def test_admin_logs_a_user_out_everywhere(admin_client, user, api_client) -> None:
    tokens = tokens_for_user(user)
    response = admin_client.post(
        "/admin/auth/user/", {"action": "logout_everywhere", "_selected_action": [user.pk]}, follow=True
    )
    assert "logged out everywhere" in response.content.decode()
    me = api_client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert me.status_code == 401 and json.loads(me.content)["error"]["detail"]["reason"] == "logged_out"


def test_audit_entries_are_read_only_in_the_admin(admin_client) -> None:
    key_rotate()
    entry = KeyAuditEntry.objects.first()
    assert admin_client.get("/admin/resilience/keyauditentry/").status_code == 200
    assert admin_client.post(f"/admin/resilience/keyauditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/resilience/keyauditentry/add/").status_code == 403


def test_the_database_refuses_a_second_next_key() -> None:
    key_stage()
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.create(kid="db-00000000000000fe", state="next", secret_encrypted="x")


def test_reencrypt_without_the_old_secret_key_says_what_to_do(settings) -> None:
    key_rotate()
    settings.SECRET_KEY = "a-completely-different-secret-key-with-no-fallback-0123456789"
    with pytest.raises(KeyRingError, match="SECRET_KEY_FALLBACKS"):
        keys_reencrypt()
    with pytest.raises(CommandError, match="SECRET_KEY_FALLBACKS"):
        run("--reencrypt")


# --- tokens issued before this version (no iss/aud), during the migration window -------------------------------


def pre_ring_token(user, secret: str, **overrides) -> str:
    """An access token as the version before the ring issued them: env kid, no iss, no aud."""
    now = int(timezone.now().timestamp())
    claims = {"token_type": "access", "exp": now + 300, "iat": now, "jti": "j1", "user_id": str(user.id), **overrides}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid_for_secret(secret)})


@pytest.fixture
def window(settings):
    def open_until(delta: timedelta) -> None:
        settings.BULWARK_JWT = {**settings.BULWARK_JWT, "KIDLESS_UNTIL": timezone.now() + delta}

    return open_until


def test_tokens_without_iss_and_aud_verify_only_during_the_migration_window(user, window) -> None:
    old = pre_ring_token(user, settings.BULWARK_CONFIG.jwt_secret)
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(old)
    assert refused.value.reason == "malformed"  # iss/aud required outside the window
    window(timedelta(days=1))
    assert access_decode(old)["user_id"] == str(user.id)
    with pytest.raises(TokenNotValidError) as wrong:
        access_decode(pre_ring_token(user, settings.BULWARK_CONFIG.jwt_secret, aud="another-api"))
    assert wrong.value.reason == "invalid"  # a claim that is present must still match
    window(timedelta(seconds=-1))
    with pytest.raises(TokenNotValidError):
        access_decode(old)


def test_the_migration_window_never_relaxes_database_keys(user, window) -> None:
    key_rotate()
    ring_cache.reset()
    active = SigningKey.objects.get(state="active")
    window(timedelta(days=1))
    now = int(timezone.now().timestamp())
    claims = {"token_type": "access", "exp": now + 300, "iat": now, "jti": "j2", "user_id": str(user.id)}
    token = jwt.encode(claims, secret_decrypt(active.secret_encrypted), algorithm="HS256", headers={"kid": active.kid})
    with pytest.raises(TokenNotValidError) as refused:
        access_decode(token)
    assert refused.value.reason == "malformed"
