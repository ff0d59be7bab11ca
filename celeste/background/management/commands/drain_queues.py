import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from celeste.background.metrics import queue_lengths, queue_names
from celeste.celery import app


def in_flight(queues: set[str], workers: list[str], connection) -> dict[str, list[dict]]:
    """The tasks of ``queues`` that ``workers`` run or hold (prefetched), by worker."""
    # With the workers named, a reply from each ends the wait (else it lasts the whole timeout).
    inspect = app.control.inspect(destination=workers, timeout=5, limit=len(workers), connection=connection)
    active, reserved = inspect.active() or {}, inspect.reserved() or {}
    held = {
        worker: [
            task
            for task in active.get(worker, []) + reserved.get(worker, [])
            if (task.get("delivery_info") or {}).get("routing_key") in queues
        ]
        for worker in workers
    }
    return {worker: tasks for worker, tasks in held.items() if tasks}


class Command(BaseCommand):
    help = (
        "Before a deploy: make every worker stop taking messages from the queues, then wait until "
        "the tasks they run or hold are done. What waits in Redis stays there for the next workers. "
        "--resume makes the workers consume again (when no deploy followed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="append", help="A queue to drain (repeatable; default: all).")
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait (default 600).")
        parser.add_argument("--resume", action="store_true", help="Make the workers consume the queues again.")

    def handle(self, *args, queue=None, timeout=600, resume=False, **options):
        known = queue_names()
        queues = queue or known
        unknown = set(queues) - set(known)
        if unknown:
            raise CommandError(f"Unknown queue(s): {', '.join(sorted(unknown))}. Queues: {', '.join(known)}.")
        # A broker connection of its own, not one from the app's pool: a pooled one may have been
        # broken by a Redis restart since this process took it (call_command in a long-lived process).
        with app.connection_for_write() as connection:
            self._control(queues, resume, timeout, connection)

    def _control(self, queues: list[str], resume: bool, timeout: float, connection) -> None:
        control = app.control.add_consumer if resume else app.control.cancel_consumer
        replies = [
            reply for name in queues for reply in control(name, reply=True, timeout=2, connection=connection) or []
        ]
        if not replies:
            self.stdout.write(self.style.WARNING("No worker answered: nothing to drain or resume."))
            return
        workers = sorted({worker for reply in replies for worker in reply})
        if resume:
            self.stdout.write(self.style.SUCCESS(f"Consuming {', '.join(queues)} again: {', '.join(workers)}."))
            return
        self.stdout.write(f"{len(workers)} worker(s) stopped taking messages from {', '.join(queues)}.")
        self._wait(set(queues), workers, timeout, connection)

    def _wait(self, queues: set[str], workers: list[str], timeout: float, connection) -> None:
        deadline = time.monotonic() + timeout
        held = in_flight(queues, workers, connection)
        total = sum(map(len, held.values()))
        with tqdm(total=total, unit="task", desc="draining", file=self.stderr._out, disable=total == 0) as bar:
            while held:
                if time.monotonic() > deadline:
                    left = "\n".join(
                        f"  {worker}: " + ", ".join(f"{t['name']}[{t['id']}]" for t in tasks)
                        for worker, tasks in sorted(held.items())
                    )
                    raise CommandError(f"Not drained after {timeout:g} s; still running or held:\n{left}", returncode=2)
                time.sleep(0.5)
                held = in_flight(queues, workers, connection)
                bar.update(max(total - sum(map(len, held.values())) - bar.n, 0))
        waiting = {name: length for name, length in queue_lengths().items() if name in queues}
        inspect = app.control.inspect(destination=workers, timeout=5, limit=len(workers), connection=connection)
        scheduled = inspect.scheduled() or {}
        retries = sum(map(len, scheduled.values()))
        self.stdout.write(
            self.style.SUCCESS("Drained: no task of these queues is running or held by a worker.")
            + "\nLeft in Redis for the next workers (durable; the job ledger knows them): "
            + ", ".join(f"{name} {length}" for name, length in sorted(waiting.items()))
            + f"\nRetries waiting for their due time in the workers: {retries} (a warm shutdown puts them back"
            " in Redis; the ledger republishes any that a killed worker held)."
        )
