"""Docs that cannot drift far: every environment variable the code reads, and
every one docker-compose.yml takes from the operator's environment, has a row in
the configuration tables of docs/operations.md.

The variables are found by reading the source with ``ast`` (nothing is imported
or run): in celeste/settings/, the names passed to env_str/env_int/env_float/
env_bool/env_list and to os.environ.get/[...]/setdefault, plus the keys of the
REQUIRED (production) and _DEFAULTS (test) dicts; outside the settings, the
os.environ reads of the application packages (bootstrap, runall, the embedded
servers, the entry points)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
SETTINGS_DIR = ROOT / "celeste" / "settings"
PACKAGES = ("celeste", "catalog", "orders", "notifications", "integrations", "reports")
ENV_HELPERS = {"env_str", "env_int", "env_float", "env_bool", "env_list"}
ENVIRON_METHODS = {"get", "setdefault", "pop"}
# Settings dicts whose keys are environment variable names.
NAME_DICTS = {"REQUIRED", "_DEFAULTS"}
# What the scan must find outside the settings (so a broken scan cannot pass by finding nothing).
KNOWN_OUTSIDE_SETTINGS = {
    "CELESTE_ADMIN_USERNAME",
    "CELESTE_ADMIN_PASSWORD",
    "CELESTE_ADMIN_EMAIL",
    "CELESTE_VAR_DIR",
    "CELESTE_HOST",
    "CELESTE_PORT",
    "WEB_CONCURRENCY",
    "WORKER_FAST_CONCURRENCY",
    "DJANGO_SETTINGS_MODULE",
}


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` or a bare ``environ``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def environment_reads(path: Path, *, name_dicts: set[str] = frozenset()) -> dict[str, str]:
    """{variable: "file:line"} for every variable name the module reads as a string literal."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, str] = {}

    def add(name: str | None, node: ast.AST) -> None:
        if name:
            found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if _callee(node) in ENV_HELPERS:
                add(_literal(node.args[0]), node)
            elif isinstance(func, ast.Attribute) and func.attr in ENVIRON_METHODS and _is_environ(func.value):
                add(_literal(node.args[0]), node)
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                add(_literal(node.args[0]), node)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            add(_literal(node.slice), node)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            if any(isinstance(target, ast.Name) and target.id in name_dicts for target in node.targets):
                for key in node.value.keys:
                    add(_literal(key), node)
    return found


def settings_variables() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(SETTINGS_DIR.glob("*.py")):
        for name, where in environment_reads(path, name_dicts=NAME_DICTS).items():
            found.setdefault(name, where)
    return found


def code_variables_outside_settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if SETTINGS_DIR in path.parents or "migrations" in path.parts:
                continue
            for name, where in environment_reads(path).items():
                found.setdefault(name, where)
    return found


def compose_variables() -> dict[str, str]:
    """``${NAME…}`` interpolations: what compose takes from the operator's environment."""
    found: dict[str, str] = {}
    for lineno, line in enumerate((ROOT / "docker-compose.yml").read_text().splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for name in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", line):
            found.setdefault(name, f"docker-compose.yml:{lineno}")
    return found


def documented_variables() -> set[str]:
    """`NAME`s in the table rows of the "Configuration" section of docs/operations.md."""
    text = OPERATIONS.read_text()
    section = re.search(r"^## Configuration\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section, "docs/operations.md has no '## Configuration' section"
    rows = [line for line in section.group(1).splitlines() if line.lstrip().startswith("|")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}


def undocumented(found: dict[str, str]) -> list[str]:
    documented = documented_variables()
    return sorted(f"{name} (read at {where})" for name, where in found.items() if name not in documented)


def test_the_scan_finds_what_the_settings_read():
    found = settings_variables()

    # The production requirements, a helper read, a setdefault, and test.py's defaults.
    required = {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS", "PAYMENT_WEBHOOK_SECRETS"}
    assert required <= set(found)
    assert {"EMAIL_HOST", "DJANGO_SECURE_HSTS_SECONDS", "HF_HUB_OFFLINE", "CELESTE_VAR_DIR"} <= set(found)


def test_every_variable_the_settings_read_is_in_the_operations_configuration():
    missing = undocumented(settings_variables())

    assert not missing, "Add these to the Configuration tables of docs/operations.md:\n" + "\n".join(missing)


def test_every_variable_the_code_reads_outside_the_settings_is_in_the_operations_configuration():
    found = code_variables_outside_settings()
    assert KNOWN_OUTSIDE_SETTINGS <= set(found), sorted(KNOWN_OUTSIDE_SETTINGS - set(found))

    missing = undocumented(found)

    assert not missing, "Add these to the Configuration tables of docs/operations.md:\n" + "\n".join(missing)


def test_every_variable_docker_compose_takes_from_the_environment_is_in_the_operations_configuration():
    found = compose_variables()
    assert {"POSTGRES_PASSWORD", "WORKER_FAST_CONCURRENCY", "WEB_PORT"} <= set(found)

    missing = undocumented(found)

    assert not missing, "Add these to the Configuration tables of docs/operations.md:\n" + "\n".join(missing)
