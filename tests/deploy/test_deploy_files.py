"""The deployment files hold together without a Docker host: docker-compose.yml, the Prometheus
config and alert rules in deploy/prometheus/, and the Grafana provisioning and dashboard in
deploy/grafana/.

- compose has the services, ports, required variables, tmpfs and mounts the monitoring needs,
  and every file it mounts from the checkout exists;
- prometheus.yml scrapes the web and both workers where compose runs them, with the token
  compose gives it; alerts.yml is well formed (for, severity, summary, description);
- every PromQL expression (alerts and dashboard) parses (promql-parser, the Rust parser
  Prometheus' tools share) and names only metrics of the metrics contract (METRICS below),
  or django_*/process_* (django-prometheus, prometheus_client) or up;
- with promtool on PATH, `promtool check config` and `promtool check rules` pass too.

METRICS is the contract between the app's exporters and these files: a renamed metric must be
renamed here and in the files at once.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "celeste.json"

# The metrics contract: {family: kind}. Counters are exposed with _total (already in the name),
# histograms as _bucket/_sum/_count.
METRICS = {
    "celery_task_sent_total": "counter",
    "celery_task_received_total": "counter",
    "celery_task_started_total": "counter",
    "celery_task_succeeded_total": "counter",
    "celery_task_failed_total": "counter",
    "celery_task_retried_total": "counter",
    "celery_task_rejected_total": "counter",
    "celery_task_runtime_seconds": "histogram",
    "celery_queue_length": "gauge",
    "celery_worker_up": "gauge",
    "celeste_outbox_backlog": "gauge",
    "celeste_outbox_oldest_age_seconds": "gauge",
    "celeste_failed_tasks_open": "gauge",
    "celeste_task_switch_mode": "gauge",
    "celeste_embeddings_pending": "gauge",
    "celeste_embedding_lag_seconds": "gauge",
    "celeste_images_pending": "gauge",
    "celeste_image_lag_seconds": "gauge",
    "celeste_images_processed_total": "counter",
    "celeste_order_cache_requests_total": "counter",
    "celeste_notification_deliveries_total": "counter",
    "celeste_campaign_recipients": "gauge",
    "celeste_odoo_sync_pending": "gauge",
    "celeste_odoo_sync_failures": "gauge",
    "celeste_odoo_last_success_timestamp_seconds": "gauge",
    "celeste_job_duplicates_skipped_total": "counter",
}
# Series names a query may use: the families, plus the series of each histogram.
SERIES = set(METRICS) | {
    f"{name}{suffix}"
    for name, kind in METRICS.items()
    if kind == "histogram"
    for suffix in ("_bucket", "_sum", "_count")
}
OTHER_PREFIXES = ("django_", "process_")  # django-prometheus; prometheus_client's process collector
OTHER_NAMES = {"up"}  # Prometheus' own, per target

APP_SERVICES = ("web", "worker-slow", "worker-images", "worker-fast", "beat")
WORKERS = ("worker-slow", "worker-images", "worker-fast")
MULTIPROC_DIR = "/run/celeste-metrics"
WORKER_METRICS_PORT = "9808"
SEVERITIES = {"warning", "critical"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# Grafana's interval variables, replaced by a duration before parsing a dashboard query.
GRAFANA_INTERVAL = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def compose() -> dict:
    return load_yaml(COMPOSE)


def services() -> dict:
    return compose()["services"]


def prometheus_config() -> dict:
    return load_yaml(PROMETHEUS_DIR / "prometheus.yml")


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def data_panels(panels: list[dict]) -> list[dict]:
    """Every panel but the rows (which hold no query), rows' collapsed panels included."""
    found = []
    for panel in panels:
        if panel.get("type") == "row":
            found += data_panels(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, Grafana's interval variables replaced."""
    return [
        (panel["title"], GRAFANA_INTERVAL.sub("5m", target["expr"]))
        for panel in data_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def all_expressions() -> list[tuple[str, str]]:
    alerts = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return alerts + [(f"panel {title}", expr) for title, expr in dashboard_queries()]


def metric_names(expr: str) -> set[str]:
    """The metric names the expression selects (by name or by a __name__="…" matcher)."""
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unbalanced(expr: str) -> str | None:
    """Why the brackets of the expression do not balance (quoted strings skipped), or None."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote = None
    escaped = False
    for char in expr:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return f"unexpected {char!r}"
    if quote:
        return "unterminated string"
    return f"unclosed {stack[-1]!r}" if stack else None


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def container_ports(service: dict) -> set[int]:
    """The container side of each published port ("127.0.0.1:${X:-9090}:9090" -> 9090)."""
    return {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in service.get("ports", [])}


def bind_mounts(service: dict) -> dict[str, str]:
    """{host path relative to the checkout: container path} of the service's ./ mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source[2:]] = target
    return mounts


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_runs_the_monitoring_services_on_their_ports():
    found = services()

    for name in ("postgres", "redis", "migrate", *APP_SERVICES, "prometheus", "grafana", "flower"):
        assert name in found, f"docker-compose.yml has no {name} service"
    assert found["prometheus"]["image"].startswith("prom/prometheus")
    assert found["grafana"]["image"].startswith("grafana/grafana")
    assert container_ports(found["web"]) == {8000}
    assert container_ports(found["prometheus"]) == {9090}
    assert container_ports(found["grafana"]) == {3000}
    assert container_ports(found["flower"]) == {5555}


def test_flower_is_the_app_image_behind_required_basic_auth():
    found = services()
    flower = found["flower"]

    assert flower["image"] == found["web"]["image"]
    assert flower["command"][:4] == ["celery", "-A", "celeste", "flower"]
    assert "--port=5555" in flower["command"]
    assert environment(flower)["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_grafana_admin_password_is_required():
    grafana = services()["grafana"]

    assert environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_app_containers_get_the_metrics_token_and_a_fresh_multiprocess_directory():
    found = services()

    for name in (*APP_SERVICES, "flower", "migrate"):
        env = environment(found[name])
        assert env["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?"), name
        assert env["PROMETHEUS_MULTIPROC_DIR"] == MULTIPROC_DIR, name
        assert MULTIPROC_DIR in found[name].get("tmpfs", []), f"{name}: {MULTIPROC_DIR} is not a tmpfs"


def test_each_worker_runs_its_exporter_and_keeps_its_queue():
    found = services()

    for name in WORKERS:
        assert environment(found[name])["WORKER_METRICS_PORT"] == WORKER_METRICS_PORT, name
        assert "-Q" in found[name]["command"], name  # the worker env override kept the command
    assert "WORKER_METRICS_PORT" not in environment(found["web"])


def celery_command(service: dict) -> list[str]:
    """The service's command if it runs ``celery -A celeste …``, else []."""
    command = service.get("command") or []
    return command if command[:3] == ["celery", "-A", "celeste"] else []


def option(command: list[str], *names: str) -> str | None:
    """The value of ``-Q queues`` / ``--queues=queues`` style options, or None."""
    for i, word in enumerate(command):
        if word in names:
            return command[i + 1]
        for name in names:
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def worker_services() -> dict[str, dict]:
    return {name: service for name, service in services().items() if celery_command(service)[3:4] == ["worker"]}


def test_the_queue_split_runs_as_separate_worker_services():
    queues = {name: option(celery_command(service), "-Q", "--queues") for name, service in worker_services().items()}

    assert queues == {"worker-slow": "slow", "worker-images": "images", "worker-fast": "fast"}


def test_every_queue_a_task_is_routed_to_is_consumed_by_a_worker_service():
    from celeste.background.routing import queue_of
    from celeste.celery import app

    app.loader.import_default_modules()  # every app's tasks module, as a worker loads them
    routed = {queue_of(name) for name in app.tasks}
    consumed = {
        queue for service in worker_services().values() for queue in option(celery_command(service), "-Q").split(",")
    }

    assert {"slow", "images", "fast"} <= routed
    assert routed <= consumed, f"queues no compose service consumes: {sorted(routed - consumed)}"


def test_every_worker_service_scales_with_docker_compose_up_scale():
    # `docker compose up --scale worker-fast=3` starts three containers of one service: they must
    # not share a container name or a host port, and each needs a node name of its own.
    for name, service in worker_services().items():
        command = celery_command(service)
        node = option(command, "-n", "--hostname")
        assert "container_name" not in service, name
        assert not service.get("ports"), f"{name} publishes a host port: a second container could not bind it"
        assert node and node.endswith("@%h"), f"{name}: -n {node} is not unique per container (use name@%h)"
        # the healthcheck pings this container's own node
        assert f"-d {node.removesuffix('%h')}$$HOSTNAME" in " ".join(service["healthcheck"]["test"]), name


def test_exactly_one_beat():
    beats = [name for name, service in services().items() if celery_command(service)[3:4] == ["beat"]]
    embedded = [name for name, service in worker_services().items() if {"-B", "--beat"} & set(celery_command(service))]

    assert beats == ["beat"] and not embedded, (beats, embedded)
    assert "deploy" not in services()["beat"], "beat must not be given replicas"


def test_every_file_compose_mounts_from_the_checkout_exists():
    mounted = {source: name for name, service in services().items() for source in bind_mounts(service)}

    assert {"deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml"} <= set(mounted)
    assert {"deploy/grafana/provisioning", "deploy/grafana/dashboards"} <= set(mounted)
    for source, name in mounted.items():
        assert (ROOT / source).exists(), f"{name} mounts ./{source}, which does not exist"


def test_prometheus_reads_the_token_from_the_secret_compose_makes_of_metrics_token():
    document = compose()
    secret = document["secrets"]["metrics_token"]
    prometheus = document["services"]["prometheus"]

    assert secret == {"environment": "METRICS_TOKEN"}
    sources = [entry if isinstance(entry, str) else entry["source"] for entry in prometheus["secrets"]]
    assert "metrics_token" in sources
    for job in prometheus_config()["scrape_configs"]:
        if job["job_name"].startswith("celeste-"):
            assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}, job


# --- deploy/prometheus ------------------------------------------------------------------------


def test_prometheus_loads_the_alert_rules_mounted_beside_its_config():
    config = prometheus_config()
    mounts = bind_mounts(services()["prometheus"])

    assert config["rule_files"] == ["alerts.yml"]
    config_dir = Path(mounts["deploy/prometheus/prometheus.yml"]).parent
    assert Path(mounts["deploy/prometheus/alerts.yml"]) == config_dir / "alerts.yml"


def test_prometheus_scrapes_the_web_and_every_worker_where_compose_runs_them():
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    found = services()

    web = jobs["celeste-web"]
    assert web.get("metrics_path", "/metrics") == "/metrics"
    assert [target for group in web["static_configs"] for target in group["targets"]] == ["web:8000"]
    for worker in WORKERS:
        job = jobs[f"celeste-{worker}"]  # alerts match them with job=~"celeste-worker.*"
        assert job.get("metrics_path", "/metrics") == "/metrics"
        (discovery,) = job["dns_sd_configs"]
        assert discovery["names"] == [worker] and discovery["type"] == "A"
        assert str(discovery["port"]) == environment(found[worker])["WORKER_METRICS_PORT"]


def test_alert_rules_are_well_formed():
    document = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    assert document["groups"]
    seen = set()

    for group in document["groups"]:
        assert group["name"] and group["rules"], group.get("name")
        for rule in group["rules"]:
            name = rule.get("alert")
            assert name and re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            assert DURATION.match(str(rule["for"])), f"{name}: for {rule.get('for')!r}"
            assert rule["labels"]["severity"] in SEVERITIES, name
            assert rule["annotations"]["summary"].strip(), name
            assert rule["annotations"]["description"].strip(), name
            key = (name, tuple(sorted(rule["labels"].items())))
            assert key not in seen, f"two {name} rules with the same labels"
            seen.add(key)


def test_the_alerts_cover_queues_errors_embeddings_outbox_inbox_and_workers():
    uses = [metric_names(rule["expr"]) for rule in alert_rules()]
    exprs = [rule["expr"] for rule in alert_rules()]

    assert any("celery_queue_length" in names for names in uses)
    assert any({"celery_task_failed_total", "celery_task_succeeded_total"} <= names for names in uses)
    assert any("celeste_embedding_lag_seconds" in names for names in uses)
    assert any("celeste_outbox_oldest_age_seconds" in names for names in uses)
    assert any("celeste_failed_tasks_open" in names for names in uses)
    assert any("celery_worker_up" in names for names in uses)
    assert any('up{job=~"celeste-worker.*"}' in expr for expr in exprs)


# --- deploy/grafana ------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards_directory():
    mounts = bind_mounts(services()["grafana"])
    (datasource,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "celeste.yml")["providers"]

    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{next(iter(container_ports(services()['prometheus'])))}"
    assert provider["options"]["path"] == mounts["deploy/grafana/dashboards"]
    panels = data_panels(dashboard()["panels"])
    used = [panel.get("datasource") or {} for panel in panels]
    used += [target.get("datasource") or {} for panel in panels for target in panel["targets"]]
    assert {source.get("uid") for source in used} == {datasource["uid"]}


def test_every_dashboard_panel_has_queries():
    board = dashboard()
    panels = data_panels(board["panels"])

    assert board["uid"] and board["title"]
    assert len(panels) >= 12
    ids = [panel["id"] for panel in board["panels"]] + [panel["id"] for panel in panels if panel not in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("targets"), f"panel {panel.get('title')!r} has no targets"
        for target in panel["targets"]:
            assert target.get("expr", "").strip() and target.get("refId"), panel["title"]


# --- PromQL -------------------------------------------------------------------------------


def test_every_expression_balances_its_brackets():
    problems = [f"{where}: {why}" for where, expr in all_expressions() if (why := unbalanced(expr))]

    assert not problems, "\n".join(problems)


def test_every_expression_parses():
    problems = []
    for where, expr in all_expressions():
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            problems.append(f"{where}: {error}\n  {expr}")

    assert not problems, "\n".join(problems)


def test_the_checks_catch_broken_expressions():
    assert unbalanced('sum(rate(x{a="(("}[5m])') == "unclosed '('"
    assert unbalanced("max(x]") == "unexpected ']'"
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(x[5m])")
    assert metric_names('a{x="1"} / on() b offset 5m or {__name__="c"}') == {"a", "b", "c"}


def test_expressions_name_only_metrics_of_the_contract():
    unknown = sorted(
        f"{where}: {name}"
        for where, expr in all_expressions()
        for name in metric_names(expr)
        if name not in SERIES and name not in OTHER_NAMES and not name.startswith(OTHER_PREFIXES)
    )

    assert not unknown, "Not in the metrics contract (METRICS in this test):\n" + "\n".join(unknown)


def test_the_dashboard_shows_every_metric_of_the_contract():
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}

    missing = sorted(set(METRICS) - families)

    assert not missing, f"No dashboard panel shows {missing}"
    assert any(name.startswith("django_http_") for name in shown)


# --- promtool, when installed ---------------------------------------------------------------


def test_promtool_accepts_the_config_and_the_rules(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")
    # The token file only exists in the container: point the copy at a stand-in.
    token = tmp_path / "metrics_token"
    token.write_text("token\n")
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text().replace("/run/secrets/metrics_token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")

    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
