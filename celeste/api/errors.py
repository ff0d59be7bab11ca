"""Errors the API answers in a known way. Domain apps subclass them, so the
base package never needs to know a domain app's errors (it imports none)."""


class Conflict(Exception):
    """The request is valid but the current state forbids it: answered with 409
    and the error's message as ``detail``."""


class Unavailable(Exception):
    """A backing service the request needs (e.g. Redis for a write that lives only there)
    did not confirm the write: answered with 503 and ``Retry-After``, so the client
    retries; nothing of the request was stored."""
