"""Errors the API answers in a known way. Domain apps subclass them, so the
base package never needs to know a domain app's errors (it imports none)."""


class Conflict(Exception):
    """The request is valid but the current state forbids it: answered with 409
    and the error's message as ``detail``."""
