"""Kafka client security (TLS and SASL) from the environment, for every kind of client.

The same variables configure the admin tool (``referralnet infra``) and are meant for
every producer and consumer of the system, so one set of settings per container reaches
a secured Apache Kafka cluster:

- ``KAFKA_SECURITY_PROTOCOL``: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``,
  ``SASL_SSL``;
- ``KAFKA_SASL_MECHANISM``: ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` (default);
- ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD``: the principal's credentials
  (required with SASL);
- ``KAFKA_SSL_CAFILE``: PEM bundle of the CAs that signed the brokers' certificates
  (default: the system's CAs);
- ``KAFKA_SSL_CERTFILE`` / ``KAFKA_SSL_KEYFILE``: a client certificate (mutual TLS);
- ``KAFKA_SSL_CHECK_HOSTNAME``: ``true`` (default) or ``false``.

Bad values raise ``KafkaSecurityError`` with one line saying which variable and why.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """A Kafka security variable is missing or has a value no client understands."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to the brokers and protect the connection."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """Read the variables above from ``env`` (``Settings.kafka_variables()``); raise
        ``KafkaSecurityError`` on a bad combination."""

        def get(name: str) -> str | None:
            return env.get(name) or None

        protocol = (get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL={protocol!r}: one of {', '.join(PROTOCOLS)}"
            )
        mechanism = None
        username = password = None
        if protocol.startswith("SASL_"):
            mechanism = (get("KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512").upper()
            if mechanism not in MECHANISMS:
                raise KafkaSecurityError(
                    f"KAFKA_SASL_MECHANISM={mechanism!r}: one of {', '.join(MECHANISMS)}"
                )
            username, password = get("KAFKA_SASL_USERNAME"), get("KAFKA_SASL_PASSWORD")
            if not username or not password:
                raise KafkaSecurityError(
                    f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
        check = (get("KAFKA_SSL_CHECK_HOSTNAME") or "true").lower()
        if check not in ("true", "false"):
            raise KafkaSecurityError(f"KAFKA_SSL_CHECK_HOSTNAME={check!r}: true or false")
        files = {n: get(f"KAFKA_SSL_{n.upper()}") for n in ("cafile", "certfile", "keyfile")}
        for name, path in files.items():
            if path is not None and not os.path.isfile(path):
                raise KafkaSecurityError(f"KAFKA_SSL_{name.upper()}={path!r}: no such file")
        if (files["certfile"] is None) != (files["keyfile"] is None):
            raise KafkaSecurityError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism,
            username=username,
            password=password,
            check_hostname=check == "true",
            **files,
        )

    def _sasl(self) -> dict[str, Any]:
        if not self.uses_sasl:
            return {}
        return {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients (admin, producer, consumer)."""
        options: dict[str, Any] = {"security_protocol": self.protocol, **self._sasl()}
        if self.uses_tls:
            options["ssl_check_hostname"] = self.check_hostname
            for name in ("cafile", "certfile", "keyfile"):
                if getattr(self, name) is not None:
                    options[f"ssl_{name}"] = getattr(self, name)
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context aiokafka and faust take (None without TLS)."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        context.check_hostname = self.check_hostname
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def faust(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App``: its ``broker_credentials`` (none: plaintext)."""
        from faust.auth import SASLCredentials, SSLCredentials

        context = self.ssl_context()
        if self.uses_sasl:
            credentials: SASLCredentials | SSLCredentials = SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        elif context is not None:
            credentials = SSLCredentials(context)
        else:
            return {}
        return {"broker_credentials": credentials}

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer and consumer."""
        options: dict[str, Any] = {"security_protocol": self.protocol, **self._sasl()}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options


ClientKind = Literal["kafka-python", "aiokafka", "faust"]


def client_kwargs(kind: ClientKind, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The security keyword arguments every Kafka client of the system is built with.

    ``kind`` names the library: ``kafka-python`` (``KafkaAdminClient``, ``KafkaProducer``,
    ``KafkaConsumer``), ``aiokafka`` (``AIOKafkaProducer``, ``AIOKafkaConsumer``) or
    ``faust`` (``faust.App``: ``broker_credentials``, empty without TLS or SASL). Read from
    the environment (``env`` for tests) at each call, so a process needs nothing but its
    variables; a bad value raises ``KafkaSecurityError``. Every constructor goes through
    here (``tests/deploy/test_client_security.py`` checks the source for strays).
    """
    if env is None:
        # Imported here: the settings module checks its Kafka variables with this one.
        from referralnet.settings import settings

        env = settings().kafka_variables()
    security = KafkaSecurity.from_env(env)
    if kind == "kafka-python":
        return security.kafka_python()
    if kind == "aiokafka":
        return security.aiokafka()
    return security.faust()
