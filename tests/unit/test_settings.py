"""One ``Settings`` holds every variable the product reads (issue 14, must-have 5).

No module reads the environment itself (nor at import time); a bad value is refused
with one line naming the variable, by the CLI and the workers alike (exit 2); the README
documents exactly the variables there are.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from referralnet.settings import (
    VARIABLES,
    Settings,
    SettingsError,
    markdown_table,
    overridden,
    settings,
)

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ["schemas", "infra", "eventstore", "bus", "directory", "web", "services", "views"]
RUNTIME += ["referralnet", "bench"]
WRITES_ONLY = {
    # Writes a stack's variables into its own environment for the workers it spawns.
    "referralnet/supervisor.py",
    # Sets the API worker's admission bound for a benchmark run, and restores it.
    "bench/e2e.py",
}


def _reads_of_the_environment(path: Path) -> list[int]:
    """Lines of ``path`` that touch ``os.environ`` / ``os.getenv`` / ``environ``."""
    tree = ast.parse(path.read_text())
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno] * bool({a.name for a in node.names} & {"environ", "getenv"})
    return lines


def test_no_module_but_the_settings_reads_the_environment() -> None:
    readers = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in RUNTIME
        for path in (ROOT / package).rglob("*.py")
        if str(path.relative_to(ROOT)) not in WRITES_ONLY | {"referralnet/settings.py"}
        for line in _reads_of_the_environment(path)
    }
    assert readers == set(), "read them through referralnet.settings.settings()"


def _readme_table() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    lines = section.split("\n## ", 1)[0].splitlines()
    return "\n".join(line for line in lines if line.startswith("|")) + "\n"


def test_the_readme_documents_exactly_the_settings() -> None:
    documented = {row.split("`")[1] for row in _readme_table().splitlines()[2:]}
    assert documented - set(VARIABLES) == set(), "documented, but nothing reads them"
    assert set(VARIABLES) - documented == set(), "read, but not in README's table"
    assert _readme_table() == markdown_table(), "regenerate: python -m referralnet.settings"


def test_unset_and_empty_mean_the_defaults() -> None:
    assert Settings.from_env({}) == Settings.from_env({name: "" for name in VARIABLES})
    defaults = Settings.from_env({})
    assert defaults.api_port == 8000 and defaults.first_contact_sla_days == 7
    assert defaults.home == Path(".referralnet").absolute()
    assert not defaults.given("api_port")


def test_values_are_typed_and_remember_which_were_given() -> None:
    given = Settings.from_env(
        {
            "REFERRALNET_API_PORT": "9001",
            "REFERRALNET_LOG_LEVEL": "DEBUG",
            "REFERRALNET_SWEMWBS_LOW_MAX": "20",
            "REFERRALNET_PII_KEY": "k" * 44,
            "KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert given.api_port == 9001 and given.given("api_port")
    assert given.log_level == "debug" and given.swemwbs_low_max == 20.0
    assert given.kafka_ssl_check_hostname is False
    assert "k" * 44 not in repr(given)  # secrets never in a log line or a traceback
    assert given.kafka_variables() == {"KAFKA_SSL_CHECK_HOSTNAME": "false"}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("REFERRALNET_API_PORT", "eighty", "valid integer"),
        ("REFERRALNET_API_PORT", "70000", "less than or equal to 65535"),
        ("REFERRALNET_FIRST_CONTACT_SLA_DAYS", "0", "greater than or equal to 1"),
        ("REFERRALNET_TOKEN_CACHE_SECONDS", "-1", "greater than or equal to 0"),
        ("REFERRALNET_TIMEZONE", "Mars/Olympus", "not an IANA time zone"),
        ("REFERRALNET_LOG_LEVEL", "loud", "'debug', 'info'"),
        ("REFERRALNET_TOPIC_PREFIX", "a b", "pattern"),
        ("REFERRALNET_UCLA3_MOST_SEVERE", "12", "less than or equal to 9"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "one of PLAINTEXT"),
        ("KAFKA_SSL_CHECK_HOSTNAME", "maybe", "valid boolean"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    message = str(refused.value)
    assert message.startswith(f"{variable}={value!r}: ") and reason in message
    assert "\n" not in message


def test_rules_across_variables_name_them_and_secrets_are_not_echoed() -> None:
    with pytest.raises(SettingsError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert "s3cret" not in repr(
        Settings.from_env(
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "relay",
                "KAFKA_SASL_PASSWORD": "s3cret",
            }
        )
    )


def test_parsed_once_per_environment_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRALNET_API_MAX_IN_FLIGHT", "7")
    first = settings()
    assert first is settings() and first.api_max_in_flight == 7  # cached, not re-parsed
    monkeypatch.setenv("REFERRALNET_API_MAX_IN_FLIGHT", "8")
    assert settings().api_max_in_flight == 8  # a changed environment is seen
    with overridden(api_max_in_flight=3, first_contact_sla_days=2) as pinned:
        assert settings() is pinned and pinned.api_max_in_flight == 3
        assert pinned.given("api_max_in_flight")
    assert settings().api_max_in_flight == 8
    with pytest.raises(ValueError), overridden(api_port=-1):
        pass


def _run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run(
        [sys.executable, "-P", "-m", module, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "command",
    [("referralnet.cli", "status"), ("referralnet.cli", "up"), ("referralnet.workers", "api")],
    ids=" ".join,
)
def test_cli_and_workers_exit_2_with_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    # (a home of its own: were the value taken, ``up`` would start a stack there)
    ran = _run(*command, REFERRALNET_API_RATE_PER_ORG="fast", REFERRALNET_HOME=str(tmp_path))
    printed = (ran.stdout + ran.stderr).strip().splitlines()
    assert ran.returncode == 2, printed
    assert len(printed) == 1 and "Traceback" not in printed[0], printed
    assert "REFERRALNET_API_RATE_PER_ORG='fast'" in printed[0]
