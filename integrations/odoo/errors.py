"""How an Odoo call failed decides what happens next: retry later, or the inbox."""

from celeste.background.errors import PermanentError, TransientError


class OdooError(Exception):
    """Base of every error the Odoo client raises."""


class OdooTransientError(OdooError, TransientError):
    """Connection refused/reset, timeout, HTTP 5xx, an Odoo concurrency fault: retry later."""


class OdooPermanentError(OdooError, PermanentError):
    """Retrying cannot help (bad credentials, rights, validation): straight to the inbox.

    ``auth`` marks errors that concern the connection as a whole (every call will
    fail the same way), as opposed to one record (a product missing in Odoo).
    """

    def __init__(self, message: str, *, auth: bool = False):
        super().__init__(message)
        self.auth = auth


class OdooNotConfigured(OdooError):
    """ODOO_URL is unset: the integration is off."""
