"""Write (or ``--check``) the JSON Schemas and the AsyncAPI document derived from the models.

The files are committed so partners can read the contract without running Python; the
models are the source of truth, and ``--check`` (run by the test suite) fails when the
committed files no longer match them.

    python -m schemas.generate           # rewrite schemas/jsonschema/*.json, schemas/asyncapi.yaml
    python -m schemas.generate --check   # exit 1 and summarise the drift
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from schemas.dataschema import PREFIX, dataschema_uri
from schemas.envelope import REQUIRED_HEADERS
from schemas.events import ALL_MODELS, EventModel

ROOT = Path(__file__).resolve().parent
JSONSCHEMA_DIR = "jsonschema"
ASYNCAPI_FILE = "asyncapi.yaml"
DEAD_LETTER_REASON_HEADER = "dlq_reason"  # bus.dead_letters.REASON; schemas must not import bus

_UUID = {"type": "string", "format": "uuid"}
_HEADERS: dict[str, dict[str, Any]] = {
    "ce_specversion": {"const": "1.0"},
    "ce_id": {**_UUID, "description": "Unique per event; equals the event's id in its store."},
    "ce_source": {
        "type": "string",
        "format": "uri-reference",
        "description": "The producing service.",
        "examples": ["/services/intake"],
    },
    "ce_type": {"type": "string", "pattern": "^[a-z]+(-[a-z]+)*$"},
    "ce_subject": {**_UUID, "description": "The referral id; equals the record key."},
    "ce_time": {
        "type": "string",
        "format": "date-time",
        "description": "When it happened, RFC 3339 in UTC with Z.",
    },
    "ce_dataschema": {
        "type": "string",
        "pattern": f"^{PREFIX}[a-z-]+:[1-9][0-9]*$",
        "description": "Type and schema version of the value.",
    },
    "content-type": {"const": "application/json"},
    "ce_streamversion": {
        "type": "string",
        "pattern": "^[1-9][0-9]*$",
        "description": "1, 2, 3 ... per (ce_subject, ce_source): consumers detect gaps "
        "and duplicates with it.",
    },
    "ce_correlationid": {**_UUID, "description": "The request that started this chain."},
    "ce_causationid": {**_UUID, "description": "The event that caused this one, if any."},
    "ce_actor": {
        "type": "string",
        "minLength": 1,
        "description": "Directory id of the organisation whose action caused the event.",
    },
    "ce_orgsequence": {
        "type": "string",
        "pattern": "^[1-9][0-9]*$",
        "description": "Partner topics (org.{orgId}) only, and required there: 1, 2, 3 ... per "
        "(partner topic, ce_subject), assigned by the distributor to the copies that partner "
        "receives. A partner topic carries a filtered subset of each stream, so its "
        "ce_streamversion has holes by design; its consumer applies ce_orgsequence in order "
        "instead, holding a copy whose predecessor has not arrived, ignoring an exact "
        "re-delivery and dead-lettering another copy with a number already used.",
    },
}


def schema_path(model: type[EventModel]) -> str:
    """Where one version's JSON Schema is written, relative to ``schemas/``."""
    return f"{JSONSCHEMA_DIR}/{model.event_type}.v{model.version}.json"


def render() -> dict[str, str]:
    """Every generated file (path relative to ``schemas/``) and its exact text."""
    files = {
        schema_path(model): json.dumps(
            model.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False
        )
        + "\n"
        for model in ALL_MODELS
    }
    files[ASYNCAPI_FILE] = yaml.dump(
        asyncapi(), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100
    )
    return files


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-documents out in full: AsyncAPI tools do not all follow YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the three kinds of topic (DESIGN §2)."""
    messages = {_message_id(model): _message(model) for model in ALL_MODELS}
    refs = {mid: {"$ref": f"#/components/messages/{mid}"} for mid in messages}
    channels = {
        "referral-events": {
            "address": "referral-events",
            "title": "The journey log",
            "description": "Every journey event of every referral, as written by the services' "
            "outbox relays. Key = referral id, so one referral's events keep their order. "
            "Topic names take a configurable prefix.",
            "messages": refs,
        },
        "org": {
            "address": "org.{orgId}",
            "title": "One partner's events",
            "description": "What one partner organisation may see, redacted to its role by the "
            "distributor; read by that partner's view consumer group view.<orgId>. Every record "
            "carries ce_orgsequence (gap detection on a filtered subset of each stream).",
            "parameters": {"orgId": {"description": "Organisation id from the directory."}},
            "messages": refs,
        },
        "dead-letters": {
            "address": "dead-letters",
            "title": "Poison events",
            "description": "Records a consumer could not apply, with the reason in a header.",
            "messages": {"dead-letter": {"$ref": "#/components/messages/dead-letter"}},
        },
    }
    messages["dead-letter"] = _dead_letter()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Referral Network events",
            "version": "1.0.0",
            "description": "Closed-loop social-prescribing referrals exchanged by the partners "
            "of an alliance. CloudEvents 1.0 in Kafka binary content mode: attributes in ce_* "
            "headers, the event data as the JSON value. No personal data: the person is a "
            "pseudonym (person_ref). Generated by `python -m schemas.generate`; do not edit.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": {
            "publishJourneyEvent": _operation("send", "referral-events", refs),
            "distributeJourneyEvent": _operation("receive", "referral-events", refs),
            "publishPartnerEvent": _operation("send", "org", refs),
            "projectPartnerEvent": _operation("receive", "org", refs),
            "deadLetter": _operation("send", "dead-letters", {"dead-letter": {}}),
        },
        "components": {
            "messages": messages,
            "schemas": {
                "CloudEventHeaders": {
                    "type": "object",
                    "required": list(REQUIRED_HEADERS),
                    "properties": _HEADERS,
                }
            },
            "messageTraits": {
                "referral-keyed": {
                    "contentType": "application/json",
                    "correlationId": {"location": "$message.header#/ce_correlationid"},
                    "bindings": {
                        "kafka": {
                            "key": {
                                **_UUID,
                                "description": "The referral id (= ce_subject).",
                            },
                            "bindingVersion": "0.5.0",
                        }
                    },
                }
            },
        },
    }


def _message_id(model: type[EventModel]) -> str:
    return f"{model.event_type}.v{model.version}"


def _message(model: type[EventModel]) -> dict[str, Any]:
    summary = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    return {
        "name": model.event_type,
        "title": f"{model.event_type} v{model.version}",
        "summary": summary,
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/CloudEventHeaders"},
                {
                    "type": "object",
                    "properties": {
                        "ce_type": {"const": model.event_type},
                        "ce_dataschema": {"const": dataschema_uri(model.event_type, model.version)},
                    },
                },
            ]
        },
        "payload": {"$ref": f"./{schema_path(model)}"},
        "traits": [{"$ref": "#/components/messageTraits/referral-keyed"}],
    }


def _dead_letter() -> dict[str, Any]:
    return {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A record a consumer rejected: its key, value and headers unchanged, "
        f"plus {DEAD_LETTER_REASON_HEADER}.",
        "headers": {
            "type": "object",
            "required": [DEAD_LETTER_REASON_HEADER],
            "properties": {
                DEAD_LETTER_REASON_HEADER: {
                    "type": "string",
                    "description": "Why it was rejected, naming the header or field at fault.",
                }
            },
        },
        "payload": {"description": "The original value, unchanged (it may not be JSON)."},
    }


def _operation(action: str, channel: str, messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{mid}"} for mid in messages],
    }


def check(root: Path = ROOT) -> list[str]:
    """One line per generated file that is missing, different or no longer generated."""
    expected = render()
    problems = []
    for rel, text in expected.items():
        path = root / rel
        if not path.exists():
            problems.append(f"missing: {rel}")
            continue
        current = path.read_text(encoding="utf-8")
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), lineterm="")
            changed = [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            added = sum(line.startswith("+") for line in changed)
            problems.append(f"differs: {rel} (+{added} -{len(changed) - added} lines)")
    problems.extend(f"stale: {rel}" for rel in _stale(root, expected))
    return problems


def write(root: Path = ROOT) -> list[str]:
    """Bring the generated files up to date; return what changed."""
    expected = render()
    changed = []
    (root / JSONSCHEMA_DIR).mkdir(exist_ok=True)
    for rel, text in expected.items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote: {rel}")
    for rel in _stale(root, expected):
        (root / rel).unlink()
        changed.append(f"removed: {rel}")
    return changed


def _stale(root: Path, expected: dict[str, str]) -> list[str]:
    present = (root / JSONSCHEMA_DIR).glob("*.json")
    return sorted(rel for p in present if (rel := f"{JSONSCHEMA_DIR}/{p.name}") not in expected)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m schemas.generate``."""
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line)
        if problems:
            print("generated schemas drifted from the models: run python -m schemas.generate")
            return 1
        print("generated schemas are up to date")
        return 0
    for line in write() or ["generated schemas are up to date"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
