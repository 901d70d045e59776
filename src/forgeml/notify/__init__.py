"""Notifications: ``@notify.on()`` posts to Slack or any webhook when a job starts, ends or fails.

Only rank 0 posts, each post is bounded by a timeout, and a failed post is
logged without changing the job's outcome. Payloads are masked with
:func:`forgeml.secrets.mask`.
"""

from forgeml._core._env import is_rank_zero
from forgeml._core._errors import NotifyError
from forgeml.notify._decorator import log_metrics, on
from forgeml.notify._post import DEFAULT_TIMEOUT, post, slack_message

__all__ = [
    "DEFAULT_TIMEOUT",
    "NotifyError",
    "is_rank_zero",
    "log_metrics",
    "on",
    "post",
    "slack_message",
]
