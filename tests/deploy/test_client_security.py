"""Every Kafka client of the system gets the TLS/SASL settings of the environment.

Two checks: (1) the source: every constructor of a Kafka client (kafka-python, aiokafka,
faust) in the product's packages passes ``**client_kwargs(<its library>)``, so a new
client that forgets it fails here; (2) behaviour: with ``SASL_SSL`` variables set, the
clients the workers and tools build carry the protocol, mechanism, user and TLS context.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from faust.auth import SASLCredentials

import bus.admin
import referralnet.lag
from bus.faust_agent import make_app
from infra.kafka_security import client_kwargs
from referralnet.ops import log as ops_log
from tests.deploy.test_kafka_security import self_signed

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bus", "directory", "eventstore", "infra", "referralnet", "services", "views", "web")

LIBRARY = {
    "KafkaAdminClient": "kafka-python",
    "KafkaProducer": "kafka-python",
    "KafkaConsumer": "kafka-python",
    "KafkaClient": "kafka-python",
    "AIOKafkaProducer": "aiokafka",
    "AIOKafkaConsumer": "aiokafka",
    "AIOKafkaClient": "aiokafka",
    "AIOKafkaAdminClient": "aiokafka",
    "App": "faust",
}

EXEMPT = {
    "infra/tansu.py": "the embedded broker's own start-up check: plaintext on loopback",
    "infra/kafka_apply.py": "takes the KafkaSecurity it is given (referralnet infra)",
}


def client_constructions() -> list[tuple[str, int, str, str | None]]:
    """(file, line, class, library passed to client_kwargs or None) for every client built."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                cls = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if cls not in LIBRARY or (cls == "App" and "faust" not in ast.unparse(func)):
                    continue
                kind = None
                for kw in node.keywords:
                    value = kw.value
                    if (
                        kw.arg is None
                        and isinstance(value, ast.Call)
                        and ast.unparse(value.func) == "client_kwargs"
                        and value.args
                        and isinstance(value.args[0], ast.Constant)
                    ):
                        kind = str(value.args[0].value)
                found.append((name, node.lineno, cls, kind))
    return found


def test_every_kafka_client_is_built_with_the_security_settings() -> None:
    built = client_constructions()
    assert len(built) >= 15  # the scan sees the clients (relay, runner, faust, tools, ...)
    missing = [
        f"{f}:{line} {cls}"
        for f, line, cls, kind in built
        if kind != LIBRARY[cls] and f not in EXEMPT
    ]
    assert missing == []


@pytest.fixture
def secured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    cert, _ = self_signed(tmp_path)
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "referralnet-views",
        "KAFKA_SASL_PASSWORD": "not-a-real-secret",
        "KAFKA_SSL_CAFILE": str(cert),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def assert_secured_aiokafka(client: Any) -> None:
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "referralnet-views"
    assert client._ssl_context is not None


async def test_the_tools_consumer_carries_sasl_and_tls(secured: dict[str, str]) -> None:
    consumer = ops_log.consumer("127.0.0.1:1", "test")
    assert_secured_aiokafka(consumer._client)


async def test_a_lag_probe_carries_sasl_and_tls(
    secured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def recording(**kwargs: Any) -> None:
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(referralnet.lag, "AIOKafkaConsumer", recording)
    with pytest.raises(Stop):
        await referralnet.lag.highwaters("127.0.0.1:1", ["referral-events"])
    assert_secured_aiokafka(AIOKafkaConsumer(**seen[0])._client)


def test_a_faust_app_gets_sasl_credentials_with_tls(secured: dict[str, str]) -> None:
    app = make_app("referralnet-test", "127.0.0.1:1", 1)
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.username, credentials.mechanism.value) == (
        "referralnet-views",
        "SCRAM-SHA-512",
    )
    assert credentials.protocol.value == "SASL_SSL" and credentials.ssl_context is not None


def test_the_admin_client_gets_the_kafka_python_settings(
    secured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def recording(**kwargs: Any) -> None:
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(bus.admin, "KafkaAdminClient", recording)
    with pytest.raises(Stop):
        bus.admin.ensure_topics("127.0.0.1:1", {"referral-events": 1})
    assert seen[0]["security_protocol"] == "SASL_SSL"
    assert seen[0]["sasl_mechanism"] == "SCRAM-SHA-512"
    assert seen[0]["sasl_plain_username"] == "referralnet-views"
    assert seen[0]["ssl_cafile"] == secured["KAFKA_SSL_CAFILE"]


def test_plaintext_gives_plaintext_and_no_faust_credentials() -> None:
    env: dict[str, str] = {}
    assert client_kwargs("aiokafka", env) == {"security_protocol": "PLAINTEXT"}
    assert client_kwargs("kafka-python", env) == {"security_protocol": "PLAINTEXT"}
    assert client_kwargs("faust", env) == {}
