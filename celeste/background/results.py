"""The Celery result backend (``CELERY_RESULT_BACKEND``): django-celery-results' database
backend, made safe for the worker's main process (see ``main_process``)."""

from celery import states
from django.db import connection
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from . import main_process
from .ledger import ASYNC_COMMIT, waiting_for_the_database


class ResilientDatabaseBackend(DatabaseBackend):
    """The states the worker's main process records itself go through these three methods
    (their callers in Celery 5.7: ``Request._announce_revoked`` for expired and revoked
    messages, ``Request.on_timeout`` / ``on_failure`` / ``_retry_worker_lost``, the
    unknown-task and bad-ETA paths, the ``revoke`` control command). There a database error
    is logged, not raised: the state is lost, the worker lives. In pool children and other
    processes they behave as django-celery-results' own, except that storing a result
    waits out a database restart (``_store_result``)."""

    def mark_as_revoked(self, task_id, *args, **kwargs):
        with main_process.database_guard("task.state_not_recorded", task_id=task_id, state=states.REVOKED):
            return super().mark_as_revoked(task_id, *args, **kwargs)

    def mark_as_failure(self, task_id, *args, **kwargs):
        with main_process.database_guard("task.state_not_recorded", task_id=task_id, state=states.FAILURE):
            return super().mark_as_failure(task_id, *args, **kwargs)

    def mark_as_retry(self, task_id, *args, **kwargs):
        with main_process.database_guard("task.state_not_recorded", task_id=task_id, state=states.RETRY):
            return super().mark_as_retry(task_id, *args, **kwargs)

    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        """The row django-celery-results stores, written as one upsert that does not wait for
        the WAL flush (``ASYNC_COMMIT``): its manager's get_or_create took four round trips
        (SELECT, BEGIN, INSERT, COMMIT) and a flush for every task."""
        content_type, content_encoding, encoded = self.encode_content(result)
        _, _, meta = self.encode_content(
            {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        )
        row = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "meta": meta,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "traceback": traceback,
            **self._get_extended_properties(request, traceback),
            "date_done": timezone.now(),
        }
        if status == states.STARTED:
            row["date_started"] = row["date_done"]
        # In a pool child the tracer stores the outcome before it calls on_success /
        # on_failure (which finish the job in the ledger): a store that fails while
        # Postgres restarts would leave the job claimed until its lease runs out.
        waiting_for_the_database(lambda: _upsert(row))
        return result

    def _get_task_meta_for(self, task_id):
        # The main process reads a state when a child is lost (did it store SUCCESS first?)
        # and for the revoke command; both callers handle errors, so only check the connection.
        if main_process.in_worker_main_process():
            main_process.check_connections()
        return super()._get_task_meta_for(task_id)


def _upsert(row: dict) -> None:
    table = TaskResult._meta.db_table
    columns = [*row, "date_created"]
    updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in row if column != "task_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(['%s'] * len(columns))} FROM {ASYNC_COMMIT}"
            f" ON CONFLICT (task_id) DO UPDATE SET {updates}",
            [*row.values(), row["date_done"]],
        )
