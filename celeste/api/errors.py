"""Errors the API answers in a known way. Domain apps subclass them, so the
base package never needs to know a domain app's errors (it imports none)."""


class Conflict(Exception):
    """The request is valid but the current state forbids it: answered with 409
    and the error's message as ``detail``."""


class Unavailable(Exception):
    """A backing service the request needs (e.g. Redis for a write that lives only there)
    did not confirm the write: answered with 503, the message as ``detail`` and
    ``Retry-After`` (the setting named by ``retry_after_setting``), so the client
    retries; nothing of the request was stored."""

    retry_after_setting = "SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS"
    log_event = "web.service_unavailable"
