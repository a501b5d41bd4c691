"""Secret-named keys are found the same way with the memo (resilience.observability.redaction.secret_name) as
without it: a gunicorn access record with a secret header in its format is redacted on every record, not only the
first, and an ordinary header is left as it is."""

from __future__ import annotations

import logging

from resilience.observability.redaction import REDACTED, SECRET_KEY_NAME, redact_record, secret_name


def access_record(atoms: dict[str, str]) -> logging.LogRecord:
    # gunicorn's access logger passes its atoms dict as the record's args (a "%(name)s" format)
    return logging.LogRecord("gunicorn.access", logging.INFO, "", 0, "%(r)s auth=%({authorization}i)s", (atoms,), None)


def test_a_secret_header_in_the_access_format_is_redacted_on_every_record() -> None:
    for attempt in range(3):  # the memo is filled by the first; the later ones must not differ
        token = f"opaque-session-value-{attempt}-7f3a9c"
        atoms = {"r": "GET /api/cart/ HTTP/1.1", "{authorization}i": token, "{x-request-id}o": "abc123def456"}
        record = redact_record(access_record(atoms))
        assert token not in record.getMessage()
        assert REDACTED in record.getMessage()
        assert "GET /api/cart/ HTTP/1.1" in record.getMessage()


def test_the_memo_answers_as_the_pattern_does() -> None:
    names = ["{authorization}i", "{cookie}i", "{x-request-id}o", "{ratelimit-remaining}o", "password", "db_aliases"]
    names += ["API_KEY", "{http_x_api_key}e", "card_number", "{content-type}o", "csrfmiddlewaretoken", "route"]
    for name in names * 2:
        assert secret_name(name) is (SECRET_KEY_NAME.search(name) is not None), name
