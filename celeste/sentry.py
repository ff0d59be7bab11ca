"""Error reporting to Sentry, for every process that loads the settings: the web
(Django integration: unhandled exceptions of views), Celery workers and beat
(Celery integration: a task that fails for good, with its task name), commands.
``celeste/settings/base.py`` calls ``sentry_init`` only when SENTRY_DSN is set.

No personal data leaves the process:

- ``send_default_pii=False``: no user (id, username, email), no client IP, no
  cookies, no authorization headers, no task arguments (``[Filtered]``);
- no request bodies (``max_request_body_size="never"``: they hold addresses and
  emails) and no stack-frame local variables (``include_local_variables=False``:
  they hold whatever the code was handling, e.g. the email a partner is looked up by);
- ``scrub_personal_data`` (before_send, also for transactions) then drops what an
  integration might still attach: the request's cookies, body, query string and
  environment, identifying headers, the user; and replaces any email address
  left in a message, a log field or a breadcrumb by ``[email]``;
- the event scrubber removes values under keys that name secrets or personal data
  (``password``, ``token``, ``email``, ``ip_address``, …) at any depth.
"""

import re

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber

# Request headers that authenticate or identify a person (matched case-insensitively).
DROPPED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-forwarded-for", "x-real-ip", "forwarded", "x-api-key"}
)
# Parts of the request that can carry personal data: credentials, form and JSON bodies,
# search terms, the client's address.
DROPPED_REQUEST_KEYS = ("cookies", "data", "query_string", "env")
# Keys whose values are scrubbed wherever they appear in an event.
PERSONAL_KEYS = [
    "email",
    "email_address",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "recipient",
    "line1",
    "line2",
    "postal_code",
]
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def sentry_init(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=release or None,
        traces_sample_rate=traces_sample_rate,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *PERSONAL_KEYS], pii_denylist=DEFAULT_PII_DENYLIST, recursive=True
        ),
        before_send=scrub_personal_data,
        before_send_transaction=scrub_personal_data,
    )


def scrub_personal_data(event: dict, hint: dict | None = None) -> dict:
    """Drop the parts of an event that can identify a person (see the module docstring)."""
    request = event.get("request")
    if isinstance(request, dict):
        for key in DROPPED_REQUEST_KEYS:
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {name: value for name, value in headers.items() if name.lower() not in DROPPED_HEADERS}
    event.pop("user", None)
    return _without_emails(event)


def _without_emails(value):
    if isinstance(value, str):
        return EMAIL.sub("[email]", value) if "@" in value else value
    if isinstance(value, dict):
        return {key: _without_emails(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_emails(item) for item in value]
    return value
