"""TLS and SASL client settings from the environment, for kafka-python and aiokafka."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.kafka_security import KafkaSecurity, KafkaSecurityError


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (serving as its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka-1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_unset_means_plaintext() -> None:
    security = KafkaSecurity.from_env({})
    assert security.kafka_python() == {"security_protocol": "PLAINTEXT"}
    assert security.aiokafka() == {"security_protocol": "PLAINTEXT"}


async def test_sasl_over_tls_gives_both_clients_what_they_take(tmp_path: Path) -> None:
    ca, key = self_signed(tmp_path)
    env = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "referralnet-relay",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": str(ca),
        "KAFKA_SSL_CERTFILE": str(ca),
        "KAFKA_SSL_KEYFILE": str(key),
    }
    security = KafkaSecurity.from_env(env)
    assert "s3cret" not in repr(security)
    assert security.kafka_python() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "referralnet-relay",
        "sasl_plain_password": "s3cret",
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca),
        "ssl_certfile": str(ca),
        "ssl_keyfile": str(key),
    }
    options = security.aiokafka()
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options["security_protocol"] == "SASL_SSL"
    # aiokafka validates its security arguments when the client is built.
    AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **security.aiokafka())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            "KAFKA_SASL_MECHANISM='GSSAPI'",
        ),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
        ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "true or false"),
        ({"KAFKA_SSL_CERTFILE": __file__}, "go together"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(KafkaSecurityError, match=message.replace("(", r"\(")):
        KafkaSecurity.from_env(env)
