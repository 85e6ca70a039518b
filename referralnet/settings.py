"""Every environment variable the product reads, in one validated ``Settings`` (issue 14).

No other module reads the environment: each asks ``settings()`` for its value. The
environment is parsed and validated once per distinct set of values (cached), so a
process pays for it once; a process whose environment changes (the supervisor puts a
stack's variables into its own before spawning workers, tests set variables) gets a
fresh, validated ``Settings`` on the next call. Tests may instead pin one with
``overridden(...)``.

A value the product cannot use raises ``SettingsError``, whose message is one line naming
the variable and the reason; ``referralnet`` and the workers check the environment first
and exit 2 with that line. Unset and empty mean the same: the default.

The README's configuration table is generated from the fields below
(``python -m referralnet.settings``); a test fails if the two differ.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from infra.kafka_security import KafkaSecurity, KafkaSecurityError

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class SettingsError(ValueError):
    """An environment variable has a value the product cannot use (one line, named)."""


def env(name: str, default: Any, meaning: str, shown: str | None = None, **bounds: Any) -> Any:
    """A field read from environment variable ``name``; ``meaning`` and ``shown`` (the
    default as the README states it, else the default itself) make its README row."""
    extra: dict[str, Any] = {"env": name, "shown": shown if shown is not None else f"`{default}`"}
    return Field(default, description=meaning, json_schema_extra=extra, **bounds)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Settings:
    """The product's configuration; each field comes from the variable its ``env`` names.

    Built by ``Settings.from_env()`` (or ``settings()``, cached); ``Settings(...)`` with
    keywords gives the defaults for everything not named, whatever the environment says
    (``dataclasses.replace`` works, and validates).
    """

    # Where things are (DESIGN §6: unset broker/database mean "start the embedded one").
    kafka_bootstrap_servers: str | None = env(
        "KAFKA_BOOTSTRAP_SERVERS", None, "Kafka-protocol broker(s)",
        "unset: start the embedded Tansu broker",
    )  # fmt: skip
    database_url: str | None = env(
        "DATABASE_URL", None, "PostgreSQL URL", "unset: start the embedded PostgreSQL"
    )
    home: Path = env(
        "REFERRALNET_HOME", Path(".referralnet"),
        "data directory (database files, logs, keys); a process without it seals nothing "
        "it appends (`docs/tamper-evidence.md`)", "`./.referralnet`", validate_default=True,
    )  # fmt: skip
    topic_prefix: str = env(
        "REFERRALNET_TOPIC_PREFIX", "", "prefix for every topic name", "empty",
        pattern=r"^[A-Za-z0-9._-]*$",
    )  # fmt: skip
    api_host: str = env("REFERRALNET_API_HOST", "127.0.0.1", "API address of `referralnet up`")
    api_port: int = env(
        "REFERRALNET_API_PORT", 8000,
        "API port of `referralnet up` (unset: 8000, or a free port if that is taken)",
        ge=0, le=65535,
    )  # fmt: skip
    api_fd: int | None = env(
        "REFERRALNET_API_FD", None,
        "internal: the listening socket `referralnet up` hands its API worker", "unset",
        ge=0,
    )  # fmt: skip
    instance: str = env(
        "REFERRALNET_INSTANCE", "",
        "a worker process's name (`views-2`): set by the supervisor of `referralnet up "
        "--scale`; names its leadership locks' connections (`application_name`)", "empty",
    )  # fmt: skip
    timezone: str = env(
        "REFERRALNET_TIMEZONE", "Europe/London",
        "the alliance's IANA time zone: ages, report dates and months, the SLA's days "
        "(`docs/measures.md`)",
    )  # fmt: skip
    log_level: LogLevel = env(
        "REFERRALNET_LOG_LEVEL", "info",
        "worker log level (JSON lines in `$REFERRALNET_HOME/logs/`)",
    )  # fmt: skip

    # Keys and tamper evidence.
    pii_key: SecretStr | None = env(
        "REFERRALNET_PII_KEY", None, "Fernet key for person details",
        "generated in `$REFERRALNET_HOME/keys`",
    )  # fmt: skip
    pseudonym_key: SecretStr | None = env(
        "REFERRALNET_PSEUDONYM_KEY", None, "secret for the commissioner's pseudonyms",
        "generated in `$REFERRALNET_HOME/keys`",
    )  # fmt: skip
    ops_token: SecretStr | None = env(
        "REFERRALNET_OPS_TOKEN", None, "operators' token for `/metrics` and `/healthz/<worker>`",
        "generated in `$REFERRALNET_HOME/keys`",
    )  # fmt: skip
    seal_key_file: Path | None = env(
        "REFERRALNET_SEAL_KEY_FILE", None, "the services' event seal key",
        "`$REFERRALNET_HOME/keys/seal.key`",
    )  # fmt: skip
    checkpoint_key_file: Path | None = env(
        "REFERRALNET_CHECKPOINT_KEY_FILE", None, "checkpoint signing key (Ed25519, PEM)",
        "`$REFERRALNET_HOME/keys/checkpoint.key`",
    )  # fmt: skip
    checkpoint_public_key_file: Path | None = env(
        "REFERRALNET_CHECKPOINT_PUBLIC_KEY_FILE", None, "its public half",
        "`$REFERRALNET_HOME/keys/checkpoint.pub`",
    )  # fmt: skip
    anchor_file: Path | None = env(
        "REFERRALNET_ANCHOR_FILE", None, "the signed checkpoints (append-only)",
        "`$REFERRALNET_HOME/anchors/checkpoints.jsonl`",
    )  # fmt: skip
    master_keys: SecretStr | None = env(
        "REFERRALNET_MASTER_KEYS", None,
        "master keys that wrap each person's data key (comma-separated, current first; "
        "`docs/security.md`)", "generated in `$REFERRALNET_HOME/keys/master.keys`",
    )  # fmt: skip
    auditor_token: SecretStr | None = env(
        "REFERRALNET_AUDITOR_TOKEN", None,
        "the auditor's token for `GET /audit/access`", "generated in `$REFERRALNET_HOME/keys`",
    )  # fmt: skip
    web_key: SecretStr | None = env(
        "REFERRALNET_WEB_KEY", None, "Fernet key of the web app's session cookies",
        "generated in `$REFERRALNET_HOME/keys`",
    )  # fmt: skip
    web_session_seconds: int = env(
        "REFERRALNET_WEB_SESSION_SECONDS", 8 * 3600,
        "how long a web-app sign-in lasts (`docs/webapp.md`)", "`28800` (8 h)", ge=60,
    )  # fmt: skip
    checkpoint_seconds: float = env(
        "REFERRALNET_CHECKPOINT_SECONDS", 1.0,
        "the relay worker signs a checkpoint this often (0: never)", "`1`", ge=0,
    )  # fmt: skip

    # The journey's rules.
    first_contact_sla_days: int = env(
        "REFERRALNET_FIRST_CONTACT_SLA_DAYS", 7, "days within which first contact is due",
        ge=1, le=365,
    )  # fmt: skip
    sla_check_seconds: float = env(
        "REFERRALNET_SLA_CHECK_SECONDS", 30.0,
        "how often the outcomes worker flags overdue first contacts", "`30`", gt=0,
    )  # fmt: skip
    wait_for_routing_seconds: float = env(
        "REFERRALNET_WAIT_FOR_ROUTING_SECONDS", 3.0,
        "how long an outcomes command waits for routing's event before 409 not-yet",
        "`3`", ge=0,
    )  # fmt: skip

    # The API's limits.
    api_max_in_flight: int = env(
        "REFERRALNET_API_MAX_IN_FLIGHT", 64,
        "requests served at once before the API answers 503 + Retry-After (0: no bound)",
        ge=0,
    )  # fmt: skip
    api_rate_per_org: float = env(
        "REFERRALNET_API_RATE_PER_ORG", 300.0,
        "requests per second (token bucket) per organisation before 429 + Retry-After "
        "(0: no rate)", "`300`", ge=0,
    )  # fmt: skip
    api_burst_per_org: int = env("REFERRALNET_API_BURST_PER_ORG", 600, "the bucket's size", ge=1)
    api_max_in_flight_per_org: int = env(
        "REFERRALNET_API_MAX_IN_FLIGHT_PER_ORG", 24,
        "one organisation's requests served at once before 429 (keeps room for the "
        "others; 0: no bound)", ge=0,
    )  # fmt: skip
    token_cache_seconds: float = env(
        "REFERRALNET_TOKEN_CACHE_SECONDS", 2.0,
        "how long the API trusts a token lookup (revocation delay)", "`2`", ge=0,
    )  # fmt: skip

    # The report's baseline bands (docs/measures.md).
    ucla3_most_severe: float = env(
        "REFERRALNET_UCLA3_MOST_SEVERE", 9.0,
        "lowest UCLA-3 total counted as most severely lonely (`docs/measures.md`)", "`9`",
        ge=3, le=9,
    )  # fmt: skip
    swemwbs_low_max: float = env(
        "REFERRALNET_SWEMWBS_LOW_MAX", 19.5, "highest SWEMWBS score counted as low wellbeing",
        ge=7, le=35,
    )  # fmt: skip
    swemwbs_high_min: float = env(
        "REFERRALNET_SWEMWBS_HIGH_MIN", 27.5, "lowest SWEMWBS score counted as high wellbeing",
        ge=7, le=35,
    )  # fmt: skip
    wemwbs_low_max: float = env(
        "REFERRALNET_WEMWBS_LOW_MAX", 42.0, "highest WEMWBS score counted as low wellbeing",
        "`42`", ge=14, le=70,
    )  # fmt: skip
    wemwbs_high_min: float = env(
        "REFERRALNET_WEMWBS_HIGH_MIN", 60.0, "lowest WEMWBS score counted as high wellbeing",
        "`60`", ge=14, le=70,
    )  # fmt: skip

    # Kafka client security (infra.kafka_security; docs/deploy.md).
    kafka_security_protocol: str = env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
        "Kafka client security of `referralnet infra` (`docs/deploy.md`): `PLAINTEXT`, "
        "`SSL`, `SASL_PLAINTEXT` or `SASL_SSL`",
    )  # fmt: skip
    kafka_sasl_mechanism: str | None = env(
        "KAFKA_SASL_MECHANISM", None, "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`",
        "`SCRAM-SHA-512` with SASL",
    )  # fmt: skip
    kafka_sasl_username: str | None = env(
        "KAFKA_SASL_USERNAME", None, "the client's principal (needed with SASL)", "unset"
    )
    kafka_sasl_password: SecretStr | None = env(
        "KAFKA_SASL_PASSWORD", None, "its password (needed with SASL)", "unset"
    )
    kafka_ssl_cafile: Path | None = env(
        "KAFKA_SSL_CAFILE", None, "PEM bundle of the CAs that signed the brokers' certificates",
        "the system's CAs",
    )  # fmt: skip
    kafka_ssl_certfile: Path | None = env(
        "KAFKA_SSL_CERTFILE", None, "client certificate (mutual TLS; with the key file)", "unset"
    )
    kafka_ssl_keyfile: Path | None = env("KAFKA_SSL_KEYFILE", None, "its private key", "unset")
    kafka_ssl_check_hostname: bool = env(
        "KAFKA_SSL_CHECK_HOSTNAME", True, "check the brokers' host names (`true` or `false`)",
        "`true`",
    )  # fmt: skip

    given_fields: frozenset[str] = Field(default=frozenset(), repr=False)
    """The fields whose variables were set (the rest are defaults)."""

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        # Workers run in another directory than the command that started them.
        return home.absolute()

    @field_validator("timezone")
    @classmethod
    def _a_zone(cls, name: str) -> str:
        try:
            return ZoneInfo(name).key
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone (e.g. Europe/London)") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level

    @model_validator(mode="after")
    def _kafka_security_holds(self) -> Settings:
        try:
            KafkaSecurity.from_env(self.kafka_variables())
        except KafkaSecurityError as exc:
            raise ValueError(str(exc)) from None
        return self

    def given(self, field: str) -> bool:
        """Whether ``field``'s variable was set (rather than defaulted)."""
        return field in self.given_fields

    def kafka_variables(self) -> dict[str, str]:
        """The Kafka security variables as given, for ``KafkaSecurity.from_env``."""
        return {
            variable(name): _raw(getattr(self, name))
            for name in FIELDS
            if name.startswith(("kafka_security", "kafka_sasl", "kafka_ssl")) and self.given(name)
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from ``environ`` (default ``os.environ``); ``SettingsError`` names
        the first variable that is wrong and why."""
        if environ is None:
            return _from_process_environment()
        return _parse(tuple((name, environ.get(name) or None) for name in VARIABLES))


def _raw(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def variable(field: str) -> str:
    """The environment variable of ``Settings`` field ``field``."""
    extra = FIELDS[field].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["env"])


FIELDS: dict[str, FieldInfo] = {
    name: info
    for name, info in Settings.__pydantic_fields__.items()  # type: ignore[attr-defined]
    if isinstance(info.json_schema_extra, dict) and "env" in info.json_schema_extra
}
"""The fields read from a variable, in declaration order."""
FIELD_OF: dict[str, str] = {variable(name): name for name in FIELDS}
"""Each variable's field."""
VARIABLES: tuple[str, ...] = tuple(FIELD_OF)
"""Every environment variable the product reads."""
_SECRET = frozenset(name for name, info in FIELDS.items() if SecretStr in get_args(info.annotation))


@functools.lru_cache(maxsize=8)
def _parse(values: tuple[tuple[str, str | None], ...]) -> Settings:
    given: dict[str, Any] = {FIELD_OF[n]: value for n, value in values if value is not None}
    try:
        return Settings(**given, given_fields=frozenset(given))
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, given)) from None


def _one_line(exc: ValidationError, given: Mapping[str, str]) -> str:
    error = exc.errors(include_url=False)[0]
    reason = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule across variables: its message names them
        return reason
    field = str(error["loc"][0])
    shown = "<hidden>" if field in _SECRET else repr(given.get(field, ""))[:60]
    return f"{variable(field)}={shown}: {reason}"


_ENCODED = tuple(os.fsencode(name) for name in VARIABLES)


def _from_process_environment() -> Settings:
    # Asked on every append (eventstore.sealing), so it must cost little: the values are
    # looked up in os.environ's own dict (through the Mapping API each missing key costs
    # an exception, ~40 of them) and parsed once per distinct set of values.
    data: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]
    return _parse_raw(tuple(map(data.get, _ENCODED)))


@functools.lru_cache(maxsize=8)
def _parse_raw(raw: tuple[bytes | None, ...]) -> Settings:
    pairs = zip(VARIABLES, raw, strict=True)
    return _parse(tuple((name, os.fsdecode(value) if value else None) for name, value in pairs))


_pinned: list[Settings] = []


def settings() -> Settings:
    """This process's settings: from the environment (cached per distinct environment),
    or the innermost ``overridden`` ones. Raises ``SettingsError``."""
    if _pinned:
        return _pinned[-1]
    return Settings.from_env()


@contextmanager
def overridden(**changes: Any) -> Iterator[Settings]:
    """Within the block, ``settings()`` is the current settings with ``changes`` applied
    (validated like the environment's; for tests)."""
    current = settings()
    pinned = dataclasses.replace(
        current, **changes, given_fields=current.given_fields | changes.keys()
    )
    _pinned.append(pinned)
    try:
        yield pinned
    finally:
        _pinned.remove(pinned)


def markdown_table() -> str:
    """The README's configuration table: one row per variable, in field order."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for info in FIELDS.values():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        rows.append(f"| `{extra['env']}` | {info.description} | {extra['shown']} |")
    return "\n".join(rows) + "\n"


def check_or_exit(program: str) -> Settings:
    """The settings, or exit 2 with one line naming the bad variable (entry points)."""
    try:
        return settings()
    except SettingsError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    print(markdown_table(), end="")
