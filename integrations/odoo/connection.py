"""What staff see of the Odoo connection (never the key) and its "Test connection":
each step, what worked and what failed."""

from dataclasses import dataclass

from django.conf import settings

from .client import OdooClient, OdooConfig
from .errors import OdooError


@dataclass
class Step:
    name: str
    ok: bool | None  # None: not tried (an earlier step failed)
    detail: str


def connection_settings() -> list[tuple[str, str]]:
    """The settings as staff may see them: the API key only as set or not."""
    return [
        ("ODOO_URL", settings.ODOO_URL or "(not set: the integration is off)"),
        ("ODOO_DB", settings.ODOO_DB or "(not set)"),
        ("ODOO_USER", settings.ODOO_USER or "(not set)"),
        ("ODOO_API_KEY", "set (hidden)" if settings.ODOO_API_KEY else "(not set)"),
        ("ODOO_TIMEOUT_SECONDS", str(settings.ODOO_TIMEOUT_SECONDS)),
    ]


def connection_check() -> list[Step]:
    """Reach the server, log in, read a stock location: stops at the first failure."""
    config = OdooConfig.from_settings()
    if config is None:
        return [Step("configuration", False, "ODOO_URL is not set: the Odoo integration is off.")]
    client = OdooClient(config)  # a fresh login, not this thread's cached one
    checks = [
        ("reach the server", lambda: f"Odoo {client.version().get('server_version', '?')} answers at {config.url}"),
        ("log in", lambda: f"{config.user!r} logged in to {config.db!r} (uid {client.uid})"),
        (
            "read stock locations",
            lambda: f"{len(client.search('stock.location', [], limit=5))} location(s) readable",
        ),
    ]
    steps, failed = [], False
    for name, check in checks:
        if failed:
            steps.append(Step(name, None, "not tried"))
            continue
        try:
            steps.append(Step(name, True, check()))
        except (OdooError, OSError) as exc:
            failed = True
            steps.append(Step(name, False, f"{type(exc).__name__}: {exc}"))
    return steps
