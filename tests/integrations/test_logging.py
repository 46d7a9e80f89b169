"""AuditLogHandler: marked log records become events; others are ignored."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from auditledger import Actor
from auditledger.integrations import AuditLogHandler, audit_extra, audit_scope
from auditledger.testing import Capture, assert_recorded, recorded


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.integrations.audit")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    log.handlers.clear()


def test_marked_records_become_events_with_the_scope_actor(logger: logging.Logger) -> None:
    """audit_extra selects a record; the message becomes a detail and the scope's actor is used."""
    capture = Capture()
    logger.addHandler(AuditLogHandler(capture))
    with audit_scope(Actor.service_account("ci-bot"), request_id="req-1"):
        logger.info("token %s revoked", "t-1", extra=audit_extra("CREDENTIAL", "DELETE", id="t-1"))
        logger.info("an ordinary line")
    event = assert_recorded(capture, resource="CREDENTIAL", action="DELETE", actor="ci-bot", count=1)
    assert event["details"] == {"id": "t-1", "message": "token t-1 revoked", "requestId": "req-1"}
    assert len(recorded(capture)) == 1


def test_default_resource_type_selects_every_record_and_exc_info_is_failure(logger: logging.Logger) -> None:
    """A handler with a default resource type records each record it gets; exc_info marks failure."""
    capture = Capture()
    logger.addHandler(AuditLogHandler(capture, resource_type="SETTING", action="UPDATE", level=logging.WARNING))
    logger.info("below the handler's level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("setting change failed")
    assert_recorded(capture, resource="SETTING", action="UPDATE", outcome="failure", count=1)


def test_recording_errors_go_to_handle_error_unless_raise_errors(logger: logging.Logger) -> None:
    """A refused event does not break the logging call by default, and raises with raise_errors=True."""
    capture = Capture()
    handler = AuditLogHandler(capture)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.info("x", extra=audit_extra("not valid", "READ"))
    assert len(errors) == 1 and recorded(capture) == []
    logger.handlers.clear()
    logger.addHandler(AuditLogHandler(capture, raise_errors=True))
    with pytest.raises(Exception, match="resource_type"):
        logger.info("x", extra=audit_extra("not valid", "READ"))
