"""The staff second factor (issue 15, point 4) against the test stack's real PostgreSQL (primary + replica) and
Redis: the controls need ``resilience.operate_controls`` *and* a session verified by a TOTP code or a backup code —
superusers included —; a used code is refused, also with the primary down (the cache and this process's memory);
the ``otp`` limit holds whatever django-otp's throttle row says; ``manage.py staff_otp`` enrols, resets, lists.

Codes are computed here from the enrolled secret (django-otp's own RFC 6238 code, tests/second_factor.py). A
"fresh" code is the next step's: django-otp accepts one step either side, and only steps above the last used one.
"""

from __future__ import annotations

import re
import time
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from resilience.controls.models import ControlAuditEntry, OperatorControl
from resilience.controls.state import READ_ONLY
from resilience.db.nodes import PRIMARY, registry
from resilience.staff import otp
from resilience.staff.models import StaffSessionEpoch
from resilience.staff.otp import otp_backup_codes, otp_deferred_flush, otp_enroll, used_codes
from tests.factories import TEST_PASSWORD, UserFactory
from tests.helpers import dead
from tests.redis_servers import dead_redis_cache
from tests.second_factor import STEP, code_for, device_code, key_from_uri, uri_in, verified_login

LOGIN = "/admin/login/"
DASHBOARD = "/admin/resilience/"
CONTROL = "/admin/resilience/control/"
VERIFY = "/admin/otp/verify/"
REPLICA = "replica_1"
URI_FORMAT = re.compile(
    r"^otpauth://totp/Bulwark(?::|%3A)(?P<user>[^?]+)\?secret=(?P<secret>[A-Z2-7]+)&algorithm=SHA1&digits=6&period=30"
    r"&issuer=Bulwark$"
)


@pytest.fixture(autouse=True)
def _fresh_memory():
    used_codes.reset()
    yield
    used_codes.reset()


def _operator(username: str, kind: str = "superuser"):
    if kind == "superuser":
        return UserFactory(username=username, is_staff=True, is_superuser=True)
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="operate_controls"))
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_operatorcontrol", "add_operatorcontrol"]))
    return user


def _login(client, user, code: str = "", next_url: str = DASHBOARD):
    return client.post(
        f"{LOGIN}?next={next_url}",
        {"username": user.get_username(), "password": TEST_PASSWORD, "otp_token": code, "next": next_url},
    )


def _logged_in(response, next_url: str = DASHBOARD) -> bool:
    return response.status_code == 302 and response["Location"] == next_url


def _errors(response) -> str:
    return " ".join(str(e) for e in response.context["form"].non_field_errors()) if response.context else ""


def _switch_on(client):
    return client.post(
        CONTROL, {"action": "switch", "target": READ_ONLY, "value": "on", "reason": "otp test", "confirmed": "on"}
    )


def _forget_in_cache(device) -> None:
    now = int(time.time()) // STEP
    cache.delete_many(
        [f"{otp.KEY_PREFIX}totp-floor:{device.pk}"]
        + [f"{otp.KEY_PREFIX}totp:{device.pk}:{t}" for t in range(now - 3, now + 4)]
    )


def _fresh(device) -> str:
    """A code no earlier verification can have used: the next step's (accepted: one step either side)."""
    return device_code(device, at=time.time() + STEP)


# ---- who may operate --------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["superuser", "permission"])
def test_an_operator_without_a_verified_second_factor_can_look_but_not_change(client, kind):
    user = _operator("oncall", kind)
    otp_enroll(user=user)  # enrolled, but this session was never verified
    client.force_login(user)
    body = client.get(DASHBOARD).content.decode()
    assert 'id="rz-second-factor"' in body and "enrol a second factor to operate" in body
    assert 'id="rz-rotate"' not in body
    assert _switch_on(client).status_code == 403
    assert client.get(reverse("admin:resilience_operatorcontrol_add")).status_code == 403
    added = client.post(
        reverse("admin:resilience_operatorcontrol_add"), {"key": READ_ONLY, "enabled": "on", "reason": "x"}
    )
    assert added.status_code == 403
    assert not OperatorControl.objects.exists() and not ControlAuditEntry.objects.exists()


@pytest.mark.django_db
def test_without_a_device_an_operator_logs_in_look_only(client):
    user = _operator("newhire")
    response = _login(client, user, code="123456")  # a code typed without a device is ignored
    assert _logged_in(response), _errors(response)
    body = client.get(DASHBOARD).content.decode()
    assert "enrol a second factor to operate" in body and "staff_otp enroll newhire" in body
    assert _switch_on(client).status_code == 403
    verify = client.get(VERIFY).content.decode()
    assert 'id="otp-no-device"' in verify and "staff_otp enroll newhire" in verify


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["superuser", "permission"])
def test_with_a_valid_code_the_operator_changes_a_control_and_a_reused_code_is_refused(client, settings, kind):
    user = _operator("oncall", kind)
    device = otp_enroll(user=user)
    missing = _login(client, user)
    assert not _logged_in(missing) and "Enter the code" in _errors(missing)  # the password alone is not enough
    wrong = _login(client, user, code=str((int(device_code(device)) + 1) % 1_000_000).zfill(6))
    assert not _logged_in(wrong) and "not valid" in _errors(wrong)
    paused = _login(client, user, device_code(device))  # django-otp's throttle: 1 s after one wrong code
    assert not _logged_in(paused) and "paused for 1 s" in _errors(paused)
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # from here on: refused for being used, not for being throttled
    code = device_code(device)
    assert _logged_in(_login(client, user, code))
    assert _switch_on(client).status_code == 302
    assert OperatorControl.objects.get(key=READ_ONLY).enabled
    assert ControlAuditEntry.objects.get(key=READ_ONLY).actor == user

    other = client.__class__()  # another browser, the same code
    reused = _login(other, user, code)
    assert not _logged_in(reused) and "already used" in _errors(reused)
    used_codes.forget_memory()  # another worker, and Redis lost its keys: the database's last_t alone refuses it
    _forget_in_cache(device)
    assert not _logged_in(_login(other, user, code))
    assert _logged_in(_login(other, user, _fresh(device)))


@pytest.mark.django_db
def test_a_backup_code_works_once(client, settings):
    settings.OTP_STATIC_THROTTLE_FACTOR = 0  # refused for being used, not for django-otp's pause after a failure
    user = _operator("oncall")
    codes = otp_backup_codes(user=user, count=2)
    assert _logged_in(_login(client, user, codes[0]))
    assert _switch_on(client).status_code == 302
    assert not StaticToken.objects.filter(token=codes[0]).exists()  # deleted when used, as django-otp does
    again = _login(client.__class__(), user, codes[0])
    assert not _logged_in(again) and "already used" in _errors(again)
    assert _logged_in(_login(client.__class__(), user, codes[1].upper()))  # as typed from paper


@pytest.mark.django_db
def test_the_step_up_page_verifies_a_session_that_logged_in_without_the_code(client):
    user = _operator("oncall")
    device = otp_enroll(user=user)
    client.force_login(user)  # e.g. logged in before being enrolled
    assert _switch_on(client).status_code == 403
    page = client.get(f"{VERIFY}?next={DASHBOARD}").content.decode()
    assert 'id="otp-verify-form"' in page
    wrong = client.post(VERIFY, {"otp_token": "000000x", "next": DASHBOARD})
    assert wrong.status_code == 200 and "not valid" in wrong.content.decode()
    verified = client.post(VERIFY, {"otp_token": device_code(device), "next": "https://elsewhere.example/"})
    assert verified.status_code == 302 and verified["Location"] == DASHBOARD  # never off-site
    assert _switch_on(client).status_code == 302
    assert 'id="otp-verified"' in client.get(VERIFY).content.decode()


@pytest.mark.django_db
def test_the_otp_limit_refuses_the_next_attempt_even_with_a_correct_code(client, settings):
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "otp": (3, 60)}
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # django-otp's own throttle out of the way: Bulwark's limit alone
    user = _operator("oncall")
    device = otp_enroll(user=user)
    client.force_login(user)
    for _ in range(3):
        assert "not valid" in client.post(VERIFY, {"otp_token": "000000"}).content.decode()
    limited = client.post(VERIFY, {"otp_token": device_code(device)})
    assert limited.status_code == 200 and "Too many second-factor attempts" in limited.content.decode()
    assert _switch_on(client).status_code == 403
    # The count is the user's, wherever the attempt comes from: the login form is refused as well.
    refused = _login(client.__class__(), user, device_code(device))
    assert not _logged_in(refused) and "Too many" in _errors(refused)
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)  # the row alone would let it through
    assert not _logged_in(_login(client.__class__(), user, device_code(device)))


# ---- the admin: devices on Bulwark's site, no secret shown, removal ends the sessions --------------------------


@pytest.mark.django_db
def test_device_admins_hide_secrets_and_removing_a_device_needs_a_verified_operator(client):
    operator = _operator("boss")
    operator_device = otp_enroll(user=operator)
    staffer = _operator("oncall", "permission")
    device = otp_enroll(user=staffer)
    otp_backup_codes(user=staffer, count=3)
    change = reverse("admin:otp_totp_totpdevice_change", args=[device.pk])
    delete = reverse("admin:otp_totp_totpdevice_delete", args=[device.pk])

    client.force_login(operator)  # not verified
    assert client.get(delete).status_code == 403
    verified_login(client, operator, operator_device)
    page = client.get(change).content.decode()
    assert device.key not in page and 'name="key"' not in page
    assert client.get(reverse("admin:otp_totp_totpdevice_config", args=[device.pk])).status_code == 403
    assert client.get(reverse("admin:otp_totp_totpdevice_add")).status_code == 403  # enrol with the command
    static = client.get(reverse("admin:otp_static_staticdevice_changelist")).content.decode()
    assert "codes left" in static.lower()
    for token in StaticToken.objects.filter(device__user=staffer):
        assert (
            token.token
            not in client.get(reverse("admin:otp_static_staticdevice_change", args=[token.device_id])).content.decode()
        )

    epoch = StaffSessionEpoch.objects.filter(user=staffer).values_list("epoch", flat=True).first() or 0
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    assert StaffSessionEpoch.objects.get(user=staffer).epoch == epoch + 1  # every session of theirs ended

    # The user admin's action removes the rest (the backup codes) the same way.
    users = reverse("admin:auth_user_changelist")
    assert "reset_second_factor" in client.get(users).content.decode()
    done = client.post(users, {"action": "reset_second_factor", "_selected_action": [staffer.pk]}, follow=True)
    assert done.status_code == 200
    assert not StaticDevice.objects.filter(user=staffer).exists()
    assert StaffSessionEpoch.objects.get(user=staffer).epoch == epoch + 2


@pytest.mark.django_db
def test_the_reset_action_is_not_offered_to_an_unverified_operator(client):
    operator = _operator("boss")
    otp_enroll(user=operator)
    client.force_login(operator)
    assert "reset_second_factor" not in client.get(reverse("admin:auth_user_changelist")).content.decode()


# ---- manage.py staff_otp ------------------------------------------------------------------------------------------


def _command(*args: str) -> str:
    out = StringIO()
    call_command("staff_otp", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_enroll_prints_the_uri_once_and_its_secret_logs_in(client):
    user = _operator("boss")
    output = _command("enroll", "boss", "--backup-codes", "2")
    uri = uri_in(output)
    match = URI_FORMAT.match(uri)
    assert match and match.group("user") == "boss", uri
    assert "█" in output or "▀" in output or "▄" in output  # the terminal QR code
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed and device.name == "default"
    codes = re.findall(r"^  ([a-z2-7]{8})$", output, re.MULTILINE)
    assert len(codes) == 2 and StaticToken.objects.filter(device__user=user).count() == 2
    assert _logged_in(_login(client, user, code_for(key_from_uri(uri))))
    assert _switch_on(client).status_code == 302

    again = _command("enroll", "boss")
    assert "already enrolled" in again and "otpauth://" not in again
    assert TOTPDevice.objects.get(user=user).pk == device.pk
    replaced = uri_in(_command("enroll", "boss", "--force", "--no-qr"))
    assert key_from_uri(replaced) != key_from_uri(uri)
    assert list(TOTPDevice.objects.filter(user=user)) != [device]  # the old one is gone, and its codes with it
    assert TOTPDevice.objects.filter(user=user).count() == 1

    listing = _command("list")
    assert re.search(r"^boss\s+yes\s+yes\s+2\s", listing, re.MULTILINE), listing


@pytest.mark.django_db
def test_reset_removes_every_device_and_ends_the_sessions():
    user = _operator("boss")
    otp_enroll(user=user)
    otp_backup_codes(user=user, count=1)
    output = _command("reset", "boss")
    assert "Removed 2 second-factor device(s)" in output
    assert not TOTPDevice.objects.filter(user=user).exists() and not StaticDevice.objects.filter(user=user).exists()
    assert StaffSessionEpoch.objects.get(user=user).epoch == 1  # every session of theirs ended
    assert "nothing to remove" in _command("reset", "boss")
    assert "cannot until enrolled (look-only): boss" in _command("list")


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["enroll", "reset"])
def test_an_unknown_user_is_a_clear_error(action):
    with pytest.raises(CommandError) as caught:
        _command(action, "nobody")
    assert caught.value.returncode == 1
    message = str(caught.value)
    assert "No user 'nobody'" in message and "nothing changed" in message and "\n" not in message
    assert not TOTPDevice.objects.exists()


@pytest.mark.django_db
def test_a_customer_is_not_enrolled():
    UserFactory(username="shopper")
    with pytest.raises(CommandError, match="not staff"):
        _command("enroll", "shopper")


# ---- the primary down: the replica verifies, the cache and memory refuse a reuse -------------------------------


def primary_down_test(test):
    """Real routing, committed rows (the replica streams them), both nodes."""
    for mark in (
        pytest.mark.skipif(REPLICA not in settings.DATABASES, reason="needs DATABASE_REPLICA_URLS (make test sets it)"),
        pytest.mark.django_db(transaction=True, databases=[PRIMARY, REPLICA]),
        pytest.mark.replica_routing,
        pytest.mark.usefixtures("_primary_back"),
    ):
        test = mark(test)
    return test


def _replicated(model, **lookup) -> None:
    deadline = time.monotonic() + 10
    while not model.objects.using(REPLICA).filter(**lookup).exists():
        assert time.monotonic() < deadline, f"the replica did not replay {model.__name__} {lookup}"
        time.sleep(0.05)


@pytest.fixture
def _primary_back():
    yield
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)


@primary_down_test
@pytest.mark.parametrize("view", ["same worker", "another worker", "Redis down too, same worker"])
def test_with_the_primary_down_a_code_verifies_from_the_replica_and_its_reuse_is_refused(client, settings, view):
    if view.startswith("Redis down"):
        settings.CACHES = {"default": dead_redis_cache()}
    user = _operator("oncall")
    device = otp_enroll(user=user)
    _replicated(TOTPDevice, pk=device.pk)
    code = device_code(device)
    unguarded = otp.UNGUARDED._value.get()
    with dead(PRIMARY):
        assert _logged_in(_login(client, user, code))
        page = client.get(DASHBOARD).content.decode()  # verified, from the replica: it says why nothing can change
        assert "the controls are stored there, so they cannot change now" in page
        if view == "another worker":
            used_codes.forget_memory()  # only the shared cache remembers
        reused = _login(client.__class__(), user, code)
        assert not _logged_in(reused) and "already used" in _errors(reused)
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)  # back
    assert TOTPDevice.objects.using(PRIMARY).get(pk=device.pk).last_t == -1  # the save was skipped: not the row
    assert otp.UNGUARDED._value.get() == unguarded + (1 if view.startswith("Redis down") else 0)


@primary_down_test
def test_with_the_primary_down_a_backup_code_works_once_and_is_deleted_when_it_is_back(client):
    user = _operator("oncall")
    codes = otp_backup_codes(user=user, count=2)
    token = StaticToken.objects.using(PRIMARY).get(token=codes[0])
    _replicated(StaticToken, pk=token.pk)
    with dead(PRIMARY):
        assert _logged_in(_login(client, user, codes[0]))
        assert not _logged_in(_login(client.__class__(), user, codes[0]))  # this worker's memory
        used_codes.forget_memory()
        assert not _logged_in(_login(client.__class__(), user, codes[0]))  # another worker: the shared cache
        otp_deferred_flush()  # the primary still down: the deletion keeps waiting
        assert used_codes.pending() == 1
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)  # back
    assert StaticToken.objects.using(PRIMARY).filter(pk=token.pk).exists()
    otp_deferred_flush()  # the node monitor's task once the primary answers
    assert used_codes.pending() == 0
    assert not StaticToken.objects.using(PRIMARY).filter(pk=token.pk).exists()
    assert _logged_in(_login(client.__class__(), user, codes[1]))


@primary_down_test
def test_a_used_code_whose_deletion_was_lost_is_deleted_at_its_next_use(client):
    """A worker restarted during the outage forgot its queued deletion: the cache refuses the code, and the first
    try once the primary answers deletes its row."""
    user = _operator("oncall")
    (code,) = otp_backup_codes(user=user, count=1)
    token = StaticToken.objects.using(PRIMARY).get(token=code)
    _replicated(StaticToken, pk=token.pk)
    with dead(PRIMARY):
        assert _logged_in(_login(client, user, code))
    used_codes.reset()  # the restart: memory and queue gone; Redis still has the mark
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)
    assert not _logged_in(_login(client.__class__(), user, code))
    assert not StaticToken.objects.using(PRIMARY).filter(pk=token.pk).exists()


@primary_down_test
def test_enrolling_with_the_primary_down_says_so_and_changes_nothing():
    user = _operator("oncall")
    _replicated(type(user), pk=user.pk)
    with dead(PRIMARY), pytest.raises(CommandError, match="takes no writes now") as caught:
        _command("enroll", "oncall")
    assert "nothing changed" in str(caught.value) and caught.value.returncode == 1
    registry().record_probe(PRIMARY, in_recovery=False, lag_seconds=0, lag_bytes=0, replay_lsn=None)
    assert not TOTPDevice.objects.using(PRIMARY).exists()
