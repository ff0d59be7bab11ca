"""The ASGI server: uvicorn serving ``celeste.asgi`` (the live event stream's process).

``python -m celeste.asgi_server [--host H] [--port P]``. One process holds thousands
of idle streams on its event loop (no thread each); run more processes (or
containers) for more. It never warms the embedding model: it serves no search.

Deploys: on SIGTERM, before uvicorn stops, the callbacks registered with
``on_drain`` end the open streams (the apps' own, e.g. notifications/live.py), so
their responses finish cleanly and uvicorn does not wait out its grace period;
clients reconnect to another process and replay what they missed.
"""

import argparse
import os
import resource
from collections.abc import Callable

import uvicorn

_drain_callbacks: list[Callable[[], None]] = []


def on_drain(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in the event loop, no arguments) when the server begins to shut down."""
    _drain_callbacks.append(callback)


class Server(uvicorn.Server):
    async def shutdown(self, sockets=None) -> None:
        for callback in list(_drain_callbacks):
            callback()
        await super().shutdown(sockets)


def raise_open_files_limit() -> int:
    """Each stream is a socket: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--graceful-seconds",
        type=float,
        default=10,
        help="How long a shutdown waits for responses still running (streams end at once).",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celeste.settings.local")
    raise_open_files_limit()
    config = uvicorn.Config(
        "celeste.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="off",  # Django's ASGI handler speaks HTTP only
        log_config=None,  # Django's LOGGING (JSON lines in production) applies
        timeout_graceful_shutdown=args.graceful_seconds,
        proxy_headers=False,
    )
    Server(config).run()


if __name__ == "__main__":
    # Through the imported module, not __main__: on_drain's registry must be the one the apps import.
    from celeste.asgi_server import main as imported_main

    imported_main()
