"""The project's shape, checked so it holds without anyone remembering it.

Imports (every module of the project, module-level and function-level imports,
absolute and relative; migrations aside):

1. The base package ``celeste`` imports no domain app: apps plug into it
   (``celeste.api.errors.Conflict``, ``celeste.background.startup``), never the
   other way round.
2. Services, selectors and tasks (modules or packages of that name) import no
   ``api`` package, and outside a domain app's ``api/`` no module imports a
   domain app's API, and no app's API imports another app's: except the
   modules in API_ALLOWED, whose docstring must say why.
3. Domain apps import only "down": catalog imports no other domain app; orders
   may import catalog; notifications and integrations may import orders and
   catalog; reports may import all four, and none of them imports reports.

A tasks module and the services that enqueue its tasks import each other; each
of them must import cleanly whichever comes first (so neither reads the other
while it loads).

Every task name is written once, in the ``celeste_task(name, …)`` that defines
the task; code refers to the task object.

Every ``post_save`` / ``post_delete`` receiver of ours is in the receivers table
of docs/architecture.md (model, receiver, tasks enqueued, what they do), and the
table lists no receiver that is not connected.
"""

import ast
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from django.db.models.signals import post_delete, post_save

ROOT = Path(__file__).resolve().parents[1]
BASE = "celeste"
MAY_IMPORT = {
    "catalog": set(),
    "orders": {"catalog"},
    "notifications": {"orders", "catalog"},
    "integrations": {"orders", "catalog"},
    # Reports read every other app's tables and send through notifications; nothing imports reports.
    "reports": {"orders", "catalog", "notifications", "integrations"},
}
DOMAIN = set(MAY_IMPORT)
SERVICE_LAYER = {"services", "selectors", "tasks"}
# module -> (the API module it may import, what its docstring must say)
API_ALLOWED = {
    "orders.enriched": ("orders.api.serializers", "the API's JSON itself is the product"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for top in (BASE, *sorted(DOMAIN)):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.relative_to(ROOT).parts:
                modules[module_name(path)] = path
    return modules


def imports_of(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it, as absolute dotted names.
    ``from x import y`` counts as importing x and x.y (y may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(part for part in [*base_parts, node.module or ""] if part)
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def is_api(name: str) -> bool:
    return "api" in name.split(".")


def within(name: str, module: str) -> bool:
    return bool(module) and (name == module or name.startswith(module + "."))


def in_service_layer(module: str) -> bool:
    return bool(SERVICE_LAYER & set(module.split(".")[1:]))


def violations(module: str, imported: set[str]) -> list[str]:
    app = module.split(".")[0]
    found: dict[str, str] = {}  # imported name -> the rule it breaks (once per import, not per name in it)
    for name in sorted(imported):
        if any(within(name, flagged) for flagged in found):
            continue
        target = name.split(".")[0]
        if app == BASE and target in DOMAIN:
            found[name] = "the base package imports no domain app"
        elif app in DOMAIN and target in DOMAIN and target != app and target not in MAY_IMPORT[app]:
            allowed = " and ".join(sorted(MAY_IMPORT[app]))
            found[name] = f"{app} may import {allowed} only" if allowed else f"{app} imports no other domain app"
        elif not is_api(name) or within(name, API_ALLOWED.get(module, ("",))[0]):
            continue
        elif in_service_layer(module):
            found[name] = "services, selectors and tasks import no api package"
        elif target in DOMAIN and (not is_api(module) or target != app):
            found[name] = f"only {target}'s own api package imports it"
    return [f"{module} imports {name}: {rule}" for name, rule in found.items()]


def test_every_import_follows_the_rules():
    found = []
    for module, path in project_modules().items():
        imported = imports_of(module, path.read_text(), is_package=path.name == "__init__.py")
        found += violations(module, imported)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", sorted(API_ALLOWED))
def test_each_allowed_api_import_is_used_and_explained(module):
    allowed, reason = API_ALLOWED[module]
    path = project_modules()[module]
    source = path.read_text()

    assert allowed in imports_of(module, source)
    assert reason.lower() in " ".join((ast.get_docstring(ast.parse(source)) or "").split()).lower()


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("celeste.wsgi", "from catalog.embeddings import warm_up_in_background"),
        ("celeste.devserver.loopback", "def serve():\n    import orders.models"),
        ("celeste.api.exceptions", "from orders import errors"),
        ("catalog.services", "from orders.models import Order"),
        ("catalog.admin", "from .api.serializers import embedding_status"),
        ("catalog.services", "from .api import serializers"),
        ("orders.tasks", "def run():\n    from orders.api.views import OrderViewSet"),
        ("orders.services", "from celeste.api.params import boolean_param"),
        ("integrations.odoo.services.orders", "from ...api import anything"),
        ("notifications.api.views", "from orders.api.views import IsStaff"),
        ("orders.models", "from notifications.models import Notification"),
        ("notifications.services", "from integrations.models import OdooOrderLink"),
    ],
)
def test_the_checker_catches_a_bad_import(module, source):
    assert violations(module, imports_of(module, source))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("celeste.background.queue", "from .models import OutboxMessage"),
        ("orders.services", "from catalog.services import stock_reserve"),
        ("orders.api.views", "from ..services import order_place\nfrom celeste.api.permissions import IsStaff"),
        ("orders.errors", "from celeste.api.errors import Conflict"),
        ("integrations.odoo.signals", "from orders.models import Order\nfrom catalog.models import StockLevel"),
    ],
)
def test_the_checker_accepts_a_good_import(module, source):
    assert violations(module, imports_of(module, source)) == []


def task_cycles() -> dict[str, list[str]]:
    """Each tasks module -> the modules of its app it imports that import it back
    (and the packages holding them)."""
    modules = project_modules()
    imports = {m: imports_of(m, p.read_text(), is_package=p.name == "__init__.py") for m, p in modules.items()}
    cycles = {}
    for tasks in (m for m in modules if m.rsplit(".", 1)[-1] == "tasks"):
        # Its own packages aside (``from . import services`` names the package too).
        imported = {name for name in imports[tasks] if not within(tasks, name)}
        partners = [
            m
            for m in modules
            if m != tasks
            and any(within(name, tasks) for name in imports[m])
            and any(within(m, name) for name in imported)
        ]
        packages = {name for name in imported if name in modules and any(within(p, name) for p in partners)}
        if partners:
            cycles[tasks] = sorted({*partners, *packages})
    return cycles


IMPORT_FIRST = """
import importlib, sys
import django

django.setup()
cycle, first = sys.argv[1].split(","), sys.argv[2]
# Forget the cycle's modules (and the parents' attributes naming them), then load
# them again starting with ``first``, as if nothing had imported them yet.
for name in [n for n in sys.modules if any(n == c or n.startswith(c + ".") for c in cycle)]:
    del sys.modules[name]
    parent, _, child = name.rpartition(".")
    vars(sys.modules[parent]).pop(child, None) if parent in sys.modules else None
importlib.import_module(first)
for name in cycle:
    importlib.import_module(name)
"""


def test_tasks_and_their_services_are_found_importing_each_other():
    assert {"catalog.tasks", "notifications.tasks", "integrations.odoo.tasks"} <= set(task_cycles())


@pytest.mark.parametrize("tasks", sorted(task_cycles()))
def test_a_task_cycle_imports_whichever_module_comes_first(tasks, tmp_path):
    cycle = [tasks, *task_cycles()[tasks]]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "celeste.settings.base",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CELESTE_VAR_DIR": str(tmp_path),
    }
    for first in cycle:
        result = subprocess.run(
            [sys.executable, "-c", IMPORT_FIRST, ",".join(cycle), first],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"importing {first} first:\n{result.stderr[-3000:]}"


def connected_receivers() -> set[str]:
    """``module.function`` of every post_save / post_delete receiver defined in our packages."""
    found = set()
    for signal in (post_save, post_delete):
        for _key, receiver, _is_async in signal.receivers:
            if isinstance(receiver, weakref.ReferenceType):
                receiver = receiver()
            module = getattr(receiver, "__module__", "") or ""
            if receiver is not None and module.split(".")[0] in {BASE, *DOMAIN}:
                found.add(f"{module}.{receiver.__qualname__}")
    return found


def documented_receivers() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Receivers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {re.findall(r"`([^`]+)`", row.split("|")[3])[0] for row in rows}


def test_every_receiver_of_ours_is_in_the_receivers_table():
    assert connected_receivers(), "no receivers found: the lookup is broken"
    assert connected_receivers() - documented_receivers() == set(), "missing from docs/architecture.md"
    assert documented_receivers() - connected_receivers() == set(), "listed but not connected"


def test_every_task_name_is_written_once_where_the_task_is_defined():
    from celeste.celery import app

    names = {name for name, task in app.tasks.items() if task.__module__.split(".")[0] in {BASE, *DOMAIN}}
    assert "catalog.embed_products" in names
    written: dict[str, list[str]] = {name: [] for name in names}
    for module, path in project_modules().items():
        tree = ast.parse(path.read_text())
        defining = {
            id(node.args[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "celeste_task" and node.args
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                written[node.value].append(
                    f"{module}:{node.lineno}" + (" (definition)" if id(node) in defining else "")
                )

    assert {
        name: places for name, places in written.items() if len(places) != 1 or "(definition)" not in places[0]
    } == {}
