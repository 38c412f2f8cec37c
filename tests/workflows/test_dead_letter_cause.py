"""The error a dead letter records names the activity's own failure, not Temporal's wrapper."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from dllmflow.workflows.episode import _cause


def _activity_error(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "activity error", scheduled_event_id=1, started_event_id=2, identity="w",
        activity_type="tool_call", activity_id="1", retry_state=None,
    )  # fmt: skip
    err.__cause__ = cause
    return err


def test_a_given_up_retry_schedule_reports_the_last_failure():
    last = ApplicationError("canceling statement due to statement timeout", type="QueryCanceled")
    gave_up = TimeoutError(
        "Not enough time to schedule next retry before activity ScheduleToClose timeout, "
        "giving up retrying",
        type=TimeoutType.SCHEDULE_TO_CLOSE,
        last_heartbeat_details=[],
    )
    gave_up.__cause__ = last
    assert _cause(_activity_error(gave_up)) == (
        "QueryCanceled: canceling statement due to statement timeout"
    )


def test_a_plain_timeout_is_reported_as_it_is():
    timeout = TimeoutError(
        "activity timeout", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[]
    )
    assert _cause(_activity_error(timeout)) == "activity timeout"
