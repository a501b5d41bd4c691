"""The stored events in the admin: listed, searched, filtered; read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from resilience.events import event_record, events_flush
from resilience.events.models import ResilienceEvent
from tests.factories import UserFactory

CHANGELIST = reverse("admin:resilience_resilienceevent_changelist")
pytestmark = pytest.mark.django_db(transaction=True)  # the flush writes outside a test transaction


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def stored():
    event_record("db_node_down", subject="replica_1", severity="warning", message="Database node replica_1 is down")
    event_record("breaker_state_changed", subject="payment_gateway", message="Circuit breaker payment_gateway opened")
    event_record("control_changed", subject="db.read_only", message="Operator control db.read_only set to on")
    assert events_flush() == 3
    return {event.kind: event for event in ResilienceEvent.objects.all()}


def _listed(response) -> list[str]:
    assert response.status_code == 200, response.status_code
    return sorted(event.kind for event in response.context["cl"].result_list)


def test_the_changelist_searches_subject_message_kind_and_worker(admin_client, stored) -> None:
    assert _listed(admin_client.get(CHANGELIST)) == ["breaker_state_changed", "control_changed", "db_node_down"]
    assert _listed(admin_client.get(CHANGELIST, {"q": "payment_gateway"})) == ["breaker_state_changed"]
    assert _listed(admin_client.get(CHANGELIST, {"q": "is down"})) == ["db_node_down"]
    assert _listed(admin_client.get(CHANGELIST, {"q": "control_changed"})) == ["control_changed"]
    worker = stored["db_node_down"].worker
    assert len(_listed(admin_client.get(CHANGELIST, {"q": worker}))) == 3
    assert _listed(admin_client.get(CHANGELIST, {"q": "nothing like it"})) == []
    page = admin_client.get(CHANGELIST).content.decode()
    assert "Database node replica_1 is down" in page and "replica_1" in page


def test_the_changelist_filters_by_kind_and_severity_and_drills_down_by_day(admin_client, stored) -> None:
    assert _listed(admin_client.get(CHANGELIST, {"kind": "db_node_down"})) == ["db_node_down"]
    assert _listed(admin_client.get(CHANGELIST, {"severity__exact": "warning"})) == ["db_node_down"]
    at = stored["db_node_down"].at
    drill = {"at__year": at.year, "at__month": at.month, "at__day": at.day}
    assert len(_listed(admin_client.get(CHANGELIST, drill))) == 3


def test_events_cannot_be_added_changed_or_deleted(admin_client, stored) -> None:
    event = stored["db_node_down"]
    assert admin_client.get(reverse("admin:resilience_resilienceevent_add")).status_code == 403
    change = reverse("admin:resilience_resilienceevent_change", args=[event.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()  # a view, no form to save
    assert admin_client.post(change, {"message": "edited"}).status_code == 403
    delete = reverse("admin:resilience_resilienceevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert ResilienceEvent.objects.get(pk=event.pk).message == "Database node replica_1 is down"
