"""Flower, the Celery monitor, behind HTTP basic auth: ``make flower`` (``python -m
celeste.flower``) and ``manage.py runall --flower``.

There is no unauthenticated Flower: without FLOWER_BASIC_AUTH (``user:password``,
comma-separated for several logins) it refuses to start. It listens on
FLOWER_ADDRESS (default 127.0.0.1, so only this machine) and FLOWER_PORT (5555).
The credentials stay in the environment, where Flower reads them itself
(``FLOWER_BASIC_AUTH``): never on the command line, which ``ps`` shows to
everyone. Flower shows tasks because publishers send ``task-sent``
(``CELERY_TASK_SEND_SENT_EVENT``) and workers send task events while Flower asks for them
(its ``enable_events``; ``CELERY_WORKER_SEND_TASK_EVENTS`` is off by default).
"""

import os
import sys
from collections.abc import Mapping

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555
# Flower reads every FLOWER_<option> variable itself; these two are passed as options
# instead (an empty value, which means "the default" here, would make Flower fail).
_PASSED_AS_OPTIONS = ("FLOWER_ADDRESS", "FLOWER_PORT")


class FlowerNotConfigured(Exception):
    """FLOWER_BASIC_AUTH (or FLOWER_PORT) is missing or malformed: Flower must not start."""


def basic_auth_logins(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``user:password`` logins of FLOWER_BASIC_AUTH; refuses a missing or malformed value."""
    value = (environ.get("FLOWER_BASIC_AUTH") or "").strip()
    if not value:
        raise FlowerNotConfigured(
            "Flower needs a login: set FLOWER_BASIC_AUTH=user:password (comma-separated for several). "
            "It never runs without authentication."
        )
    logins = [login.strip() for login in value.split(",")]
    for login in logins:
        user, colon, password = login.partition(":")
        if not (colon and user and password):
            raise FlowerNotConfigured(
                "FLOWER_BASIC_AUTH must be user:password (comma-separated for several logins), "
                "each with a user name and a password."
            )
    return logins


def flower_command(environ: Mapping[str, str] = os.environ) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` to run Flower for the Celery app ``celeste`` with this environment's login,
    address and port. Raises FlowerNotConfigured rather than build an unauthenticated Flower."""
    logins = basic_auth_logins(environ)
    address = (environ.get("FLOWER_ADDRESS") or "").strip() or DEFAULT_ADDRESS
    port_text = (environ.get("FLOWER_PORT") or "").strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FlowerNotConfigured(f"FLOWER_PORT must be a TCP port number, not {port_text!r}.")
    env = {name: value for name, value in environ.items() if name not in _PASSED_AS_OPTIONS}
    env["FLOWER_BASIC_AUTH"] = ",".join(logins)
    # An API open to anyone would be the one way around the login: never inherited.
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    argv = [sys.executable, "-m", "celery", "-A", "celeste", "flower", f"--address={address}", f"--port={port_text}"]
    return argv, env


def main() -> None:
    try:
        argv, env = flower_command()
    except FlowerNotConfigured as exc:
        print(f"flower: {exc}", file=sys.stderr)
        sys.exit(2)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
