"""A small Odoo-compatible XML-RPC server, for tests, benchmarks and local demos.

It speaks the real external API (``/xmlrpc/2/common`` ``version``/``authenticate``,
``/xmlrpc/2/object`` ``execute_kw``) for the models Celeste uses (res.partner,
product.product, sale.order(+ .line), stock.location, stock.quant), keeps its
records in memory, and answers errors the way Odoo 17 does: ``xmlrpc.client.Fault``
with code 2 (UserError and its subclasses), 3 (AccessDenied), 4 (AccessError) or
1 with a server traceback (anything else, e.g. a serialization failure).

Failure injection, for the client's error paths: a fraction of calls failing
(HTTP 503 or a concurrency fault), the next N calls failing (optionally *after*
the call took effect, as when a response is lost), latency, and a permanent
AccessDenied. It counts calls per (model, method) and stock quantity writes.

    server = FakeOdooServer().start()
    server.url, server.db, server.user, server.api_key
    server.stop()
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import threading
import time
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from xmlrpc.server import MultiPathXMLRPCServer, SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

UID = 2
SERIALIZATION_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/opt/odoo/odoo/service/model.py", line 156, in retrying\n'
    "    result = func()\n"
    '  File "/opt/odoo/odoo/sql_db.py", line 332, in execute\n'
    "    res = self._obj.execute(query, params)\n"
    "psycopg2.errors.SerializationFailure: could not serialize access due to concurrent update\n"
)


class UserError(Exception):
    code = 2


class ValidationError(UserError):
    pass


class MissingError(UserError):
    pass


class AccessDenied(Exception):
    code = 3

    def __init__(self, message="Access Denied"):
        super().__init__(message)


class AccessError(Exception):
    code = 4


@dataclass
class Failure:
    kind: str  # "503" | "concurrency" | "access_denied" | "timeout"
    after: bool = False  # fail after the call took effect (the response is lost)
    model: str | None = None  # glob, e.g. "sale.order"; None: any call
    method: str | None = None
    skip: int = 0  # let this many matching calls through first


@dataclass
class Injection:
    rate: float = 0.0  # fraction of execute_kw calls failing
    rate_kinds: tuple[str, ...] = ("503", "concurrency")
    latency: float = 0.0  # seconds added to every request
    deny: bool = False  # every authenticate/execute_kw is refused
    queued: list[Failure] = field(default_factory=list)  # next failures, in order


class OdooState:
    """The in-memory database. Many2one fields are stored as ids and read as
    ``[id, display_name]``, as Odoo does."""

    MANY2ONE = {
        "sale.order": {"partner_id": "res.partner"},
        "sale.order.line": {"order_id": "sale.order", "product_id": "product.product"},
        "stock.quant": {"product_id": "product.product", "location_id": "stock.location"},
        "stock.location": {"location_id": "stock.location"},
    }

    def __init__(self):
        self.records: dict[str, dict[int, dict]] = {
            model: {}
            for model in (
                "res.partner",
                "product.product",
                "sale.order",
                "sale.order.line",
                "stock.location",
                "stock.quant",
            )
        }
        self._ids = itertools.count(1)
        self._so_numbers = itertools.count(1)
        self.lock = threading.RLock()
        self.add("stock.location", {"name": "WH", "complete_name": "WH", "usage": "view"})

    # -- helpers for tests and demos --------------------------------------------

    def add(self, model: str, values: dict) -> int:
        with self.lock:
            record_id = next(self._ids)
            self.records[model][record_id] = {"id": record_id, **values}
            return record_id

    def add_location(self, name: str) -> int:
        return self.add(
            "stock.location", {"name": name, "complete_name": f"WH/{name}", "usage": "internal", "location_id": 1}
        )

    def add_product(self, default_code: str, name: str | None = None) -> int:
        return self.add(
            "product.product",
            {"name": name or default_code, "default_code": default_code, "type": "product", "active": True},
        )

    def on_hand(self, location_id: int) -> dict[str, float]:
        """{default_code: quantity} of the applied quants at one location."""
        with self.lock:
            products = self.records["product.product"]
            return {
                products[q["product_id"]]["default_code"]: q["quantity"]
                for q in self.records["stock.quant"].values()
                if q["location_id"] == location_id
            }

    def set_on_hand(self, *, location_id: int, product_id: int, quantity: float) -> None:
        """Change Odoo's side behind Celeste's back (a drift, for reconciliation tests)."""
        with self.lock:
            for quant in self.records["stock.quant"].values():
                if quant["location_id"] == location_id and quant["product_id"] == product_id:
                    quant["quantity"] = quantity
                    return
            self.add(
                "stock.quant",
                {
                    "product_id": product_id,
                    "location_id": location_id,
                    "quantity": quantity,
                    "inventory_quantity": 0.0,
                    "inventory_quantity_set": False,
                },
            )

    def product_id(self, default_code: str) -> int | None:
        with self.lock:
            for record in self.records["product.product"].values():
                if record.get("default_code") == default_code:
                    return record["id"]
        return None

    # -- ORM emulation -----------------------------------------------------------

    def _table(self, model: str) -> dict[int, dict]:
        try:
            return self.records[model]
        except KeyError:
            raise KeyError(model) from None

    def _display_name(self, model: str, record_id: int) -> str:
        record = self.records[model].get(record_id, {})
        return record.get("complete_name") or record.get("name") or f"{model},{record_id}"

    def _match(self, model: str, record: dict, domain: list) -> bool:
        for term in domain:
            if term in ("&",):
                continue
            if isinstance(term, str):
                raise ValueError(f"Unsupported domain operator {term!r} in this test server")
            name, op, value = term
            actual = record.get(name)
            if name == "id":
                actual = record["id"]
            if isinstance(actual, list):  # one2many/many2many: match any
                actual_values = actual
            else:
                actual_values = [actual]
            if op == "=":
                ok = any(v == value or (value is False and v in (None, False)) for v in actual_values)
            elif op == "!=":
                ok = all(v != value for v in actual_values)
            elif op == "in":
                ok = any(v in value for v in actual_values)
            elif op == "not in":
                ok = all(v not in value for v in actual_values)
            elif op in ("ilike", "=ilike"):
                pattern = str(value).lower() if op == "=ilike" else f"*{str(value).lower()}*"
                ok = any(v and fnmatch.fnmatch(str(v).lower(), pattern.replace("%", "*")) for v in actual_values)
            else:
                raise ValueError(f"Unsupported domain operator {op!r} in this test server")
            if not ok:
                return False
        return True

    def _read(self, model: str, record: dict, fields: list[str] | None) -> dict:
        many2one = self.MANY2ONE.get(model, {})
        names = fields or list(record)
        out = {"id": record["id"]}
        for name in names:
            if name == "display_name":
                out[name] = self._display_name(model, record["id"])
                continue
            value = record.get(name, False)
            if name in many2one:
                value = [value, self._display_name(many2one[name], value)] if value else False
            out[name] = False if value is None else value
        return out

    def search(self, model, domain=(), offset=0, limit=None, order=None, **_):
        table = self._table(model)
        ids = [rid for rid, rec in sorted(table.items()) if self._match(model, rec, list(domain))]
        ids = ids[offset:]
        return ids[:limit] if limit else ids

    def search_read(self, model, domain=(), fields=None, offset=0, limit=None, order=None, **_):
        table = self._table(model)
        return [self._read(model, table[rid], fields) for rid in self.search(model, domain, offset, limit)]

    def read(self, model, ids, fields=None, **_):
        table = self._table(model)
        missing = [i for i in ids if i not in table]
        if missing:
            raise MissingError(
                f"Record does not exist or has been deleted.\n(Record: {model}({missing[0]},), User: {UID})"
            )
        return [self._read(model, table[i], fields) for i in ids]

    def create(self, model, vals, context=None, **_):
        if isinstance(vals, list):
            return [self.create(model, v, context=context) for v in vals]
        context = context or {}
        vals = dict(vals)
        if model == "stock.quant":
            return self._quant_create(vals, context)
        if model == "sale.order":
            if not vals.get("partner_id") or vals["partner_id"] not in self.records["res.partner"]:
                raise ValidationError("The operation cannot be completed: missing required field Customer")
            lines = vals.pop("order_line", [])
            order_id = self.add(
                "sale.order",
                {
                    "name": f"S{next(self._so_numbers):05d}",
                    "state": "draft",
                    "client_order_ref": False,
                    "order_line": [],
                    **vals,
                },
            )
            for command in lines:
                if command[0] != 0:
                    raise UserError(f"Unsupported x2many command {command[0]} in this test server")
                line = dict(command[2])
                if line.get("product_id") not in self.records["product.product"]:
                    raise MissingError("Record does not exist or has been deleted.")
                line_id = self.add("sale.order.line", {"order_id": order_id, **line})
                self.records["sale.order"][order_id]["order_line"].append(line_id)
            return order_id
        if model == "product.product" and vals.get("default_code") and self.product_id(vals["default_code"]):
            raise ValidationError(f"A product with reference {vals['default_code']} already exists.")
        return self.add(model, vals)

    def write(self, model, ids, vals, context=None, **_):
        context = context or {}
        table = self._table(model)
        if model == "stock.quant":
            self._quant_check_inventory_mode(vals, context)
        for record_id in ids:
            if record_id not in table:
                raise MissingError(
                    f"Record does not exist or has been deleted.\n(Record: {model}({record_id},), User: {UID})"
                )
        for record_id in ids:
            table[record_id].update(vals)
            if model == "stock.quant" and "inventory_quantity" in vals:
                table[record_id]["inventory_quantity_set"] = True
        return True

    # sale.order
    def action_confirm(self, model, ids, **_):
        if model != "sale.order":
            raise AttributeError(f"'{model}' object has no attribute 'action_confirm'")
        for record_id in ids:
            order = self.read(model, [record_id], ["state"])[0]
            if order["state"] == "cancel":
                raise UserError("It is not allowed to confirm an order in the following states: Cancelled")
            self.records["sale.order"][record_id]["state"] = "sale"
        return True

    # stock.quant
    def _quant_check_inventory_mode(self, vals, context):
        if {"inventory_quantity", "quantity"} & set(vals) and not context.get("inventory_mode"):
            raise UserError("Quant's editing is restricted, you can't do this operation.")
        if "quantity" in vals:
            raise UserError("Quant's editing is restricted, you can't do this operation.")

    def _quant_create(self, vals, context):
        self._quant_check_inventory_mode(vals, context)
        product_id, location_id = vals.get("product_id"), vals.get("location_id")
        if product_id not in self.records["product.product"]:
            raise MissingError("Record does not exist or has been deleted.\n(Record: product.product)")
        location = self.records["stock.location"].get(location_id)
        if location is None:
            raise MissingError("Record does not exist or has been deleted.\n(Record: stock.location)")
        if location.get("usage") != "internal":
            raise UserError(
                f'You cannot take products from or deliver products to a location of type "{location.get("usage")}".'
            )
        # In inventory mode Odoo merges into the existing quant of the same product/location.
        for quant in self.records["stock.quant"].values():
            if quant["product_id"] == product_id and quant["location_id"] == location_id:
                quant["inventory_quantity"] = vals.get("inventory_quantity", 0.0)
                quant["inventory_quantity_set"] = True
                return quant["id"]
        return self.add(
            "stock.quant",
            {
                "product_id": product_id,
                "location_id": location_id,
                "quantity": 0.0,
                "inventory_quantity": vals.get("inventory_quantity", 0.0),
                "inventory_quantity_set": True,
            },
        )

    def action_apply_inventory(self, model, ids, **_):
        if model != "stock.quant":
            raise AttributeError(f"'{model}' object has no attribute 'action_apply_inventory'")
        quants = self.records["stock.quant"]
        for record_id in ids:
            if record_id not in quants:
                raise MissingError("Record does not exist or has been deleted.")
        for record_id in ids:
            quant = quants[record_id]
            if quant.get("inventory_quantity_set"):
                quant["quantity"] = quant["inventory_quantity"]
                quant["inventory_quantity_set"] = False
        return False  # Odoo returns None (marshalled as False) unless there is a wizard to show


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/xmlrpc/2/common", "/xmlrpc/2/object")
    protocol_version = "HTTP/1.1"  # keep-alive, as Odoo behind werkzeug/nginx

    def log_message(self, *args):  # quiet: tests read counters, not access logs
        pass

    def do_POST(self):
        fake: FakeOdooServer = self.server.fake
        with fake._lock:
            fake.in_flight += 1
            fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
        try:
            self._answer(fake)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeOdooServer):
        if fake.injection.latency:
            time.sleep(fake.injection.latency)
        data = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not self.is_rpc_path_valid():
            self.report_404()
            return
        failure = fake.take_http_failure()
        if failure is None:
            fake._local.http_failure = None
            response = self.server._marshaled_dispatch(data, None, self.path)
            # A failure decided inside execute_kw (a rate, or "after the call took effect").
            failure = fake._local.http_failure
        if failure:
            if failure == "timeout":
                time.sleep(fake.timeout_sleep)
            self._respond(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
            return
        self._respond(200, response, "text/xml")

    def _respond(self, status: int, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingMixIn, MultiPathXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeOdooServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str = "celeste-test",
        user: str = "celeste@example.com",
        api_key: str = "test-api-key",
        seed: int = 0,
    ):
        self.db, self.user, self.api_key = db, user, api_key
        self.state = OdooState()
        self.injection = Injection()
        self.random = random.Random(seed)
        self.calls: Counter = Counter()  # (model, method) -> execute_kw calls answered (incl. faults)
        self.quantity_writes = 0  # stock.quant writes/creates setting inventory_quantity that took effect
        self.quantity_write_log: list[tuple[float, int]] = []  # (time.monotonic(), quant id) of each of them
        self.call_log: list[tuple[float, str, str]] = []  # (time.monotonic(), model, method) of every execute_kw
        self.failures_injected = 0
        self.timeout_sleep = 5.0
        self.in_flight = 0  # requests being answered now, and the most ever at once
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # per request thread: an HTTP failure to answer with
        self._httpd = _Server((host, port), requestHandler=_Handler, allow_none=True, logRequests=False)
        self._httpd.fake = self
        common = SimpleXMLRPCDispatcher(allow_none=True)
        common.register_function(self._version, "version")
        common.register_function(self._authenticate, "authenticate")
        common.register_function(self._login, "login")
        obj = SimpleXMLRPCDispatcher(allow_none=True)
        obj.register_function(self._execute_kw, "execute_kw")
        self._httpd.add_dispatcher("/xmlrpc/2/common", common)
        self._httpd.add_dispatcher("/xmlrpc/2/object", obj)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The settings a Celeste process needs to talk to this server."""
        return {"ODOO_URL": self.url, "ODOO_DB": self.db, "ODOO_USER": self.user, "ODOO_API_KEY": self.api_key}

    def start(self) -> FakeOdooServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-odoo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    # -- failure injection -------------------------------------------------------

    def fail_rate(self, rate: float, kinds: tuple[str, ...] = ("503", "concurrency")) -> None:
        self.injection.rate, self.injection.rate_kinds = rate, kinds

    def fail_next(
        self,
        count: int,
        kind: str = "503",
        *,
        after: bool = False,
        model: str | None = None,
        method: str | None = None,
        skip: int = 0,
    ) -> None:
        with self._lock:
            self.injection.queued.extend(Failure(kind, after, model, method, skip) for _ in range(count))

    def deny_access(self, deny: bool = True) -> None:
        self.injection.deny = deny

    def reset_faults(self) -> None:
        self.injection = Injection()

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.quantity_writes = 0
            self.quantity_write_log.clear()
            self.call_log.clear()
            self.failures_injected = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def take_http_failure(self) -> str | None:
        """A 503/timeout decided at the HTTP layer, before the body is parsed
        (queued failures bound to a model are decided in execute_kw)."""
        with self._lock:
            for i, failure in enumerate(self.injection.queued):
                if failure.model is None and failure.method is None and not failure.after and not failure.skip:
                    if failure.kind in ("503", "timeout"):
                        del self.injection.queued[i]
                        self.failures_injected += 1
                        return failure.kind
                    return None
            return None

    def _decide(self, model: str, method: str) -> Failure | None:
        with self._lock:
            for i, failure in enumerate(self.injection.queued):
                if (failure.model and not fnmatch.fnmatch(model, failure.model)) or (
                    failure.method and failure.method != method
                ):
                    continue
                if failure.skip:
                    failure.skip -= 1
                    continue
                del self.injection.queued[i]
                self.failures_injected += 1
                return failure
            if self.injection.rate and self.random.random() < self.injection.rate:
                self.failures_injected += 1
                return Failure(self.random.choice(self.injection.rate_kinds))
        return None

    def _raise(self, failure: Failure):
        if failure.kind in ("503", "timeout"):
            self._local.http_failure = failure.kind  # do_POST answers 503 instead of the XML
            return
        if failure.kind == "concurrency":
            raise xmlrpc.client.Fault(1, SERIALIZATION_TRACEBACK)
        if failure.kind == "access_denied":
            raise xmlrpc.client.Fault(3, "Access Denied")
        raise ValueError(failure.kind)

    # -- the API -----------------------------------------------------------------

    def _version(self):
        return {
            "server_version": "17.0",
            "server_version_info": [17, 0, 0, "final", 0, ""],
            "server_serie": "17.0",
            "protocol_version": 1,
        }

    def _authenticate(self, db, login, password, user_agent_env=None):
        with self._lock:
            self.calls[("common", "authenticate")] += 1
        if db != self.db:
            raise xmlrpc.client.Fault(
                1,
                f"Traceback (most recent call last):\npsycopg2.OperationalError: "
                f'connection to server failed: FATAL:  database "{db}" does not exist\n',
            )
        if self.injection.deny or login != self.user or password != self.api_key:
            return False
        return UID

    def _login(self, db, login, password):
        return self._authenticate(db, login, password)

    def _execute_kw(self, db, uid, password, model, method, args=None, kwargs=None):
        args, kwargs = list(args or []), dict(kwargs or {})
        with self._lock:
            self.calls[(model, method)] += 1
            self.call_log.append((time.monotonic(), model, method))
        if db != self.db or uid != UID or password != self.api_key or self.injection.deny:
            raise xmlrpc.client.Fault(3, "Access Denied")
        failure = self._decide(model, method)
        if failure and not failure.after:
            self._raise(failure)
            return False  # an HTTP failure: the call must not take effect
        state = self.state
        try:
            with state.lock:
                handler = getattr(state, method, None)
                if method.startswith("_") or handler is None or method in ("add", "add_location", "add_product"):
                    raise AttributeError(f"'{model}' object has no attribute '{method}'")
                context = kwargs.pop("context", {}) or {}
                if method in ("create", "write"):
                    kwargs["context"] = context
                result = handler(model, *args, **kwargs)
                if (
                    model == "stock.quant"
                    and method in ("create", "write")
                    and "inventory_quantity" in (args[0] if method == "create" else args[1])
                ):
                    quant_ids = [result] if method == "create" else list(args[0])
                    with self._lock:
                        self.quantity_writes += 1
                        self.quantity_write_log += [(time.monotonic(), quant_id) for quant_id in quant_ids]
        except (UserError, AccessError) as exc:
            raise xmlrpc.client.Fault(exc.code, str(exc)) from None
        except AccessDenied as exc:
            raise xmlrpc.client.Fault(3, str(exc)) from None
        except Exception as exc:  # like Odoo: anything else is code 1 with the server traceback
            import traceback

            raise xmlrpc.client.Fault(1, "".join(traceback.format_exception(exc))) from None
        if failure and failure.after:
            self._raise(failure)
        return result
