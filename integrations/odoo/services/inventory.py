"""Stock changes are coalesced per (product, store) pair and pushed to Odoo as
inventory adjustments.

All writes to the sync states happen here. Tasks (tasks.py) are thin wrappers
taking ids; the receiver (signals.py) only enqueues.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from catalog.models import Product, StockLevel, Store
from celeste.background.ledger import jobs_take_gathered
from celeste.background.models import TaskMode
from celeste.background.queue import enqueue, failed_task_record
from celeste.background.switches import task_mode

from ...models import InventorySyncState, SyncStatus
from .. import tasks
from ..client import OFF_MESSAGE, OdooClient, many2one_id, odoo_client, odoo_enabled
from ..errors import OdooError, OdooPermanentError, OdooTransientError

logger = logging.getLogger(__name__)

INVENTORY_MODE = {"inventory_mode": True}
# Set while a push is queued: every change that arrives meanwhile is picked up by
# that push, so a burst of changes queues one push, not one per change. The TTL
# only matters if a push message is lost between the flag and the queue.
PUSH_SCHEDULED_KEY = "integrations:odoo:inventory_push_scheduled"
PUSH_SCHEDULED_TTL = 60
# Set while a push waits for the debounce of the pairs it is for; holds its due time
# (epoch seconds). A pair due no earlier needs no push of its own: that one takes it.
PUSH_DEFERRED_KEY = "integrations:odoo:inventory_push_deferred"
# A deferred push runs this long after the first pair it waits for is due, so the
# pairs due just after it (written by the same earlier push) go in the same batch.
PUSH_GATHER_SECONDS = 1.0
# The waiting change jobs one statement takes over (their pairs marked together).
CHANGES_TAKEN_AT_MOST = 5_000


# --- marking ---------------------------------------------------------------------

_UPSERT_COLUMNS = (
    "(product_id, store_id, dirty, version, synced_version, status, error, attempts,"
    " changed_at, created_at, updated_at)"
)
_ON_CONFLICT = """
ON CONFLICT (product_id, store_id) DO UPDATE SET
    dirty = TRUE,
    version = {table}.version + 1,
    status = EXCLUDED.status,
    error = EXCLUDED.error,
    changed_at = EXCLUDED.changed_at,
    updated_at = EXCLUDED.updated_at
"""


def _table() -> str:
    return InventorySyncState._meta.db_table


def inventory_mark_changed(*, product_id: int, store_id: int) -> bool:
    """A stock change of one pair: mark it dirty (version + 1), together with the
    pairs of the change jobs gathered into this one while it waited in the queue
    (taken over from the ledger, a chunk per statement: after a burst one run marks
    them all; see CelesteTask.coalesce_gathers), and make sure a push will take
    them: at once if one of them was not pushed within the debounce
    (ODOO_INVENTORY_DEBOUNCE_SECONDS), else when the first one's turn comes.

    Returns whether this call queued a push.
    """
    enabled = odoo_enabled()
    status, error = (SyncStatus.PENDING, "") if enabled else (SyncStatus.SKIPPED, OFF_MESSAGE)
    synced, gone, pairs = [], 0, {(product_id, store_id)}
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            waiting = jobs_take_gathered(task=tasks.odoo_inventory_changed, limit=CHANGES_TAKEN_AT_MOST)
            pairs = sorted(pairs | {(job["product_id"], job["store_id"]) for job in waiting})
            # The join drops the pairs whose product or store was deleted since the change:
            # nothing to sync. (One deleted during this statement fails it; the retry drops it.)
            # Rows are upserted in pair order, so two of these never deadlock.
            cursor.execute(
                f"INSERT INTO {_table()} {_UPSERT_COLUMNS} "
                "SELECT p.product_id, p.store_id, TRUE, 1, 0, %s, %s, 0, now(), now(), now() "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS p(product_id, store_id) "
                f"JOIN {Product._meta.db_table} AS pr ON pr.id = p.product_id "
                f"JOIN {Store._meta.db_table} AS st ON st.id = p.store_id "
                "ORDER BY p.product_id, p.store_id" + _ON_CONFLICT.format(table=_table()) + " RETURNING synced_at",
                [status, error, [p for p, _ in pairs], [s for _, s in pairs]],
            )
            rows = cursor.fetchall()
        synced += [synced_at for (synced_at,) in rows]
        gone += len(pairs) - len(rows)
        if len(waiting) < CHANGES_TAKEN_AT_MOST:
            break
        pairs = set()
    if gone:
        logger.info("odoo.inventory_pairs_gone", extra={"count": gone})
    if not synced:
        return False
    if not enabled:
        logger.info("odoo.inventory_skipped", extra={"pairs": len(synced)})
        return False
    debounce = debounce_seconds()
    # A pair never pushed, or pushed a debounce ago, may go now; else the first one's turn.
    due = None if not debounce or None in synced else min(synced) + timedelta(seconds=debounce)
    return inventory_push_schedule(due=due)


def debounce_seconds() -> float:
    """The debounce of queued pushes. Only a worker can wait for a pair's turn: with
    the push's switch on ``sync`` every change is pushed inline, as it comes."""
    if task_mode(tasks.odoo_push_inventory.name) != TaskMode.BACKGROUND:
        return 0.0
    return max(settings.ODOO_INVENTORY_DEBOUNCE_SECONDS, 0.0)


def inventory_mark_dirty(*, store_ids: list[int] | None = None, pairs: list[tuple[int, int]] | None = None) -> int:
    """Mark many pairs dirty in one statement: every stocked pair (of ``store_ids``),
    or exactly ``pairs``. For resyncs and reconciliation fixes."""
    status, error = (SyncStatus.PENDING, "") if odoo_enabled() else (SyncStatus.SKIPPED, OFF_MESSAGE)
    on_conflict = _ON_CONFLICT.format(table=_table())
    with transaction.atomic(), connection.cursor() as cursor:
        if pairs is not None:
            if not pairs:
                return 0
            cursor.execute(
                f"INSERT INTO {_table()} {_UPSERT_COLUMNS} "
                "SELECT p.product_id, p.store_id, TRUE, 1, 0, %s, %s, 0, now(), now(), now() "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS p(product_id, store_id)" + on_conflict,
                [status, error, [p for p, _ in pairs], [s for _, s in pairs]],
            )
        else:
            where, params = ("WHERE store_id = ANY(%s)", [store_ids]) if store_ids is not None else ("", [])
            cursor.execute(
                f"INSERT INTO {_table()} {_UPSERT_COLUMNS} "
                "SELECT product_id, store_id, TRUE, 1, 0, %s, %s, 0, now(), now(), now() "
                f"FROM {StockLevel._meta.db_table} {where}" + on_conflict,
                [status, error, *params],
            )
        return cursor.rowcount


def inventory_push_schedule(*, due: datetime | None = None) -> bool:
    """Make sure a push runs by ``due`` (default: now): queue one unless one is
    queued already for then or earlier. Call outside a transaction that may
    still roll back (the flags live in Redis, not in the database). Returns
    whether this call queued a push."""
    delay = (due - timezone.now()).total_seconds() if due is not None else 0.0
    if delay <= 0:
        if not cache.add(PUSH_SCHEDULED_KEY, 1, timeout=PUSH_SCHEDULED_TTL):
            return False
        enqueue(tasks.odoo_push_inventory)
        return True
    at = due.timestamp() + PUSH_GATHER_SECONDS
    queued = cache.get(PUSH_DEFERRED_KEY)
    if queued is not None and queued <= at + PUSH_GATHER_SECONDS:
        return False
    delay += PUSH_GATHER_SECONDS
    cache.set(PUSH_DEFERRED_KEY, at, timeout=delay + PUSH_SCHEDULED_TTL)
    enqueue(tasks.odoo_push_inventory, countdown=delay)
    return True


def inventory_recover() -> None:
    """On worker start: dirty pairs left by a crash or a lost message get a push
    (when their turn comes)."""
    if odoo_enabled() and InventorySyncState.objects.filter(dirty=True).exclude(status=SyncStatus.FAILED).exists():
        cache.delete_many([PUSH_SCHEDULED_KEY, PUSH_DEFERRED_KEY])
        _push_follow_up(debounce_seconds())


def _eligible(debounce: float) -> Q:
    """Pairs whose last push is at least ``debounce`` seconds old (or that never had one)."""
    if not debounce:
        return Q()
    return Q(synced_at__isnull=True) | Q(synced_at__lte=timezone.now() - timedelta(seconds=debounce))


def _push_follow_up(debounce: float) -> None:
    """Queue the next push if dirty pairs remain: now if one may go, else when the
    first one's turn comes."""
    dirty = InventorySyncState.objects.filter(dirty=True)
    if dirty.filter(_eligible(debounce)).exists():
        inventory_push_schedule()
    elif debounce and (oldest := dirty.aggregate(first=Min("synced_at"))["first"]) is not None:
        inventory_push_schedule(due=oldest + timedelta(seconds=debounce))


def _deferred_flag_release() -> None:
    """A push starting at or after the deferred push's due time does its work:
    from here on a later pair must queue a deferred push of its own."""
    queued = cache.get(PUSH_DEFERRED_KEY)
    if queued is not None and queued <= time.time() + PUSH_GATHER_SECONDS:
        cache.delete(PUSH_DEFERRED_KEY)


# --- pushing ---------------------------------------------------------------------


@dataclass
class PushResult:
    claimed: int = 0
    written: int = 0  # stock.quant quantity writes
    unchanged: int = 0  # Odoo already had the quantity: no write needed
    skipped: int = 0  # store without an Odoo location
    failed: int = 0  # permanent, per pair (recorded in the inbox as a pair job)
    calls: int = 0  # XML-RPC requests made
    error: str = ""
    exc: Exception | None = field(default=None, repr=False)

    @property
    def synced(self) -> int:
        return self.written + self.unchanged

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("exc")
        return data


def inventory_push(
    *,
    batch_size: int | None = None,
    product_id: int | None = None,
    store_id: int | None = None,
    store_ids: list[int] | None = None,
    debounced: bool = False,
) -> PushResult:
    """Push up to ``batch_size`` dirty pairs (or exactly one pair) to Odoo;
    ``debounced`` (the queued push): only pairs not pushed within
    ODOO_INVENTORY_DEBOUNCE_SECONDS, the others get a push when their turn comes.

    Claims the rows with SKIP LOCKED (concurrent pushes take different pairs)
    and holds them for the whole push, so the quantity read from StockLevel at
    send time is never overtaken by an older one. Each pair is marked clean only
    if Odoo applied it. A transient error ends the run: pairs done so far stay
    done; if none were, the error is raised (the task retries with backoff),
    otherwise another push is queued at once. A permanent error of one pair (e.g.
    its product is not in Odoo) marks that pair failed and files a pair job in
    the inbox, whose Retry re-sends the then-current quantity; an auth error
    stops the run and is raised (the inbox).
    """
    single = product_id is not None
    batch_size = 1 if single else (batch_size or settings.ODOO_INVENTORY_BATCH_SIZE)
    debounce = debounce_seconds() if debounced and not single else 0.0
    if not single:
        # From here on a new change must queue a new push: this one may have read its quantity already.
        cache.delete(PUSH_SCHEDULED_KEY)
        if debounced:
            _deferred_flag_release()
    if not odoo_enabled():
        count = InventorySyncState.objects.filter(dirty=True).update(status=SyncStatus.SKIPPED, error=OFF_MESSAGE)
        return PushResult(skipped=count)
    client = odoo_client()
    calls_before = client.calls
    with transaction.atomic():
        claim = InventorySyncState.objects.select_related("product", "store")
        if single:
            claim = claim.select_for_update(of=("self",)).filter(product_id=product_id, store_id=store_id)
        else:
            claim = claim.select_for_update(skip_locked=True, of=("self",)).filter(_eligible(debounce), dirty=True)
            if store_ids is not None:
                claim = claim.filter(store_id__in=store_ids)
        states = list(claim.order_by("changed_at", "id")[:batch_size])
        result = _states_push(client, states, raise_pair_errors=single)
    result.calls = client.calls - calls_before
    if result.claimed:
        logger.info("odoo.inventory_pushed", extra=result.as_dict())
    if result.exc is not None and (single or not result.synced or isinstance(result.exc, OdooPermanentError)):
        raise result.exc
    if not single:
        _push_follow_up(debounce)
    return result


def _states_push(client: OdooClient, states: list[InventorySyncState], *, raise_pair_errors: bool) -> PushResult:
    result = PushResult(claimed=len(states))
    if not states:
        return result
    now = timezone.now()
    pair_filter = Q()
    for state in states:
        pair_filter |= Q(product_id=state.product_id, store_id=state.store_id)
    quantities = {
        (product_id, store_id): quantity
        for product_id, store_id, quantity in StockLevel.objects.filter(pair_filter).values_list(
            "product_id", "store_id", "quantity"
        )
    }

    todo = []
    for state in states:
        if state.store.odoo_location_id is None:
            _state_done(
                state,
                status=SyncStatus.SKIPPED,
                error=f"Store {state.store.code} has no Odoo location",
                quantity=None,
                now=now,
            )
            result.skipped += 1
        else:
            todo.append(state)
    if not todo:
        return result

    try:
        skus = sorted({state.product.sku for state in todo})
        odoo_products = {
            row["default_code"]: row["id"]
            for row in client.search_read("product.product", [("default_code", "in", skus)], ["id", "default_code"])
        }
        quants = {
            (many2one_id(row["product_id"]), many2one_id(row["location_id"])): row
            for row in client.search_read(
                "stock.quant",
                [
                    ("product_id", "in", sorted(set(odoo_products.values()))),
                    ("location_id", "in", sorted({s.store.odoo_location_id for s in todo})),
                ],
                ["id", "product_id", "location_id", "quantity", "inventory_quantity_set"],
            )
        }
    except OdooError as exc:
        _states_error(todo, exc)
        result.exc, result.error = exc, str(exc)
        return result

    written: list[tuple[InventorySyncState, int, int]] = []
    pending = list(todo)
    while pending:
        state = pending.pop(0)
        quantity = quantities.get((state.product_id, state.store_id), 0)
        location_id = state.store.odoo_location_id
        odoo_product_id = odoo_products.get(state.product.sku)
        if odoo_product_id is None:
            exc = OdooPermanentError(f"No Odoo product.product with default_code {state.product.sku}")
            if raise_pair_errors:
                _states_error([state], exc)
                result.exc, result.error = exc, str(exc)
                return result
            _pair_fail(state, exc)
            result.failed += 1
            continue
        quant = quants.get((odoo_product_id, location_id))
        if quant and quant["quantity"] == quantity and not quant["inventory_quantity_set"]:
            _state_done(state, status=SyncStatus.SYNCED, error="", quantity=quantity, now=now)
            result.unchanged += 1
            continue
        try:
            if quant:
                client.write("stock.quant", [quant["id"]], {"inventory_quantity": quantity}, context=INVENTORY_MODE)
                quant_id = quant["id"]
            else:
                # In inventory mode Odoo merges a create into an existing quant, so repeating it is safe.
                quant_id = client.create(
                    "stock.quant",
                    {"product_id": odoo_product_id, "location_id": location_id, "inventory_quantity": quantity},
                    context=INVENTORY_MODE,
                )
        except OdooPermanentError as exc:
            if exc.auth or raise_pair_errors:
                _states_error([state, *pending], exc)
                result.exc, result.error = exc, str(exc)
                break
            _pair_fail(state, exc)
            result.failed += 1
            continue
        except OdooTransientError as exc:
            _states_error([state, *pending], exc)
            result.exc, result.error = exc, str(exc)
            break
        written.append((state, quant_id, quantity))

    applied = _inventory_apply(client, written, result, raise_pair_errors=raise_pair_errors)
    # Taken after Odoo applied them: the debounce counts from the write, not from the claim.
    applied_at = timezone.now()
    for state, _quant_id, quantity in applied:
        _state_done(state, status=SyncStatus.SYNCED, error="", quantity=quantity, now=applied_at)
    result.written += len(applied)
    return result


def _inventory_apply(client, written, result: PushResult, *, raise_pair_errors: bool):
    """``action_apply_inventory`` on every written quant in one call; when Odoo
    refuses the batch, one by one, so a single bad quant fails alone."""
    if not written:
        return []
    try:
        client.execute("stock.quant", "action_apply_inventory", [quant_id for _, quant_id, _ in written])
        return written
    except OdooTransientError as exc:
        _states_error([state for state, _, _ in written], exc)
        result.exc, result.error = result.exc or exc, result.error or str(exc)
        return []
    except OdooPermanentError as exc:
        if exc.auth or raise_pair_errors:
            _states_error([state for state, _, _ in written], exc)
            result.exc, result.error = exc, str(exc)
            return []
        if len(written) == 1:
            _pair_fail(written[0][0], exc)
            result.failed += 1
            return []
    applied = []
    for index, entry in enumerate(written):
        state, quant_id, _ = entry
        try:
            client.execute("stock.quant", "action_apply_inventory", [quant_id])
        except OdooPermanentError as exc:
            if exc.auth:
                _states_error([s for s, _, _ in written[index:]], exc)
                result.exc, result.error = exc, str(exc)
                break
            _pair_fail(state, exc)
            result.failed += 1
            continue
        except OdooTransientError as exc:
            _states_error([s for s, _, _ in written[index:]], exc)
            result.exc, result.error = result.exc or exc, result.error or str(exc)
            break
        applied.append(entry)
    return applied


def _state_done(state: InventorySyncState, *, status: str, error: str, quantity: int | None, now) -> None:
    # We hold the row lock since the claim: ``version`` is still what we read, so
    # the pair is clean up to it. A change after our read re-dirties it (its
    # upsert waits for our commit).
    state.dirty = False
    state.synced_version = state.version
    state.status, state.error = status, error
    if status == SyncStatus.SYNCED:
        state.synced_quantity, state.synced_at, state.attempts = quantity, now, 0
    state.save(
        update_fields=[
            "dirty",
            "synced_version",
            "status",
            "error",
            "synced_quantity",
            "synced_at",
            "attempts",
            "updated_at",
        ]
    )


def _states_error(states: list[InventorySyncState], exc: Exception) -> None:
    """A failed push that will be retried: the pairs stay dirty, the error shows in admin."""
    for state in states:
        state.attempts += 1
        state.error = f"{type(exc).__name__}: {exc}"[:2000]
        state.save(update_fields=["attempts", "error", "updated_at"])


def _pair_fail(state: InventorySyncState, exc: OdooPermanentError) -> None:
    """Only this pair cannot be pushed: park it (clean until it changes again) and
    file a pair job in the inbox, whose Retry re-sends the current quantity."""
    state.dirty = False
    state.status = SyncStatus.FAILED
    state.attempts += 1
    state.error = f"{type(exc).__name__}: {exc}"[:2000]
    state.save(update_fields=["dirty", "status", "attempts", "error", "updated_at"])
    failed_task_record(
        task_name=tasks.odoo_sync_inventory_pair.name,
        task_id="",
        kwargs={"product_id": state.product_id, "store_id": state.store_id},
        exc=exc,
        tb="",
        attempts=1,
    )
    logger.warning(
        "odoo.inventory_pair_failed",
        extra={"product_id": state.product_id, "store_id": state.store_id, "error": state.error},
    )


def inventory_pair_sync(*, product_id: int, store_id: int) -> dict:
    """Re-send one pair's current quantity (the inbox's Retry, the admin action)."""
    try:
        inventory_mark_dirty(pairs=[(product_id, store_id)])
    except IntegrityError:  # the product or store is gone: nothing to send
        return PushResult(skipped=1).as_dict()
    if not odoo_enabled():
        return PushResult(skipped=1).as_dict()
    return inventory_push(product_id=product_id, store_id=store_id).as_dict()


def inventory_push_all(*, store_ids: list[int] | None = None, progress=None) -> PushResult:
    """Push every dirty pair now, in this process (commands), batch after batch.
    ``progress(n)`` is called with the number of pairs each batch settled."""
    total = PushResult()
    while True:
        try:
            result = inventory_push(store_ids=store_ids)
        except OdooTransientError as exc:
            # A command is watched by a person: report, do not spin on a failing server.
            total.error, total.exc = str(exc), exc
            return total
        for name in ("claimed", "written", "unchanged", "skipped", "failed", "calls"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        if progress:
            progress(result.synced + result.skipped + result.failed)
        if result.claimed == 0:
            return total
        if result.exc is not None:
            total.error, total.exc = result.error, result.exc
