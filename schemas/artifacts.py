"""The committed schema documents, generated from the models (pure: returns documents; the
`roster schemas` command writes them, and a test fails when the files and the models disagree).

- `schemas/json/<topic>/<Model>.schema.json`: JSON Schema (2020-12) of every message `data`
  (and of the inbound Clever event);
- `schemas/asyncapi.json`: AsyncAPI 3.0 describing every topic, its key, headers and messages.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas import kafka_headers as h
from schemas.clever import CleverEvent
from schemas.roster_alerts import ALERT_MESSAGE_TYPES, ALERTS_SOURCE, Alert
from schemas.roster_changes import CHANGE_TYPES, CHANGES_SOURCE
from schemas.topics import (
    ALERTS_TOPIC,
    CHANGES_TOPIC,
    CLEVER_EVENTS_DLQ_TOPIC,
    CLEVER_EVENTS_TOPIC,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _unique_models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    models: list[type[BaseModel]] = [*CHANGE_TYPES.values(), Alert]
    for model in models:
        seen.setdefault(model.__name__, model)
    return list(seen.values())


def json_schemas() -> dict[str, dict[str, Any]]:
    """Relative path under `schemas/json/` -> JSON Schema document."""
    docs: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(CHANGE_TYPES.values()):
        docs[f"{CHANGES_TOPIC}/{model.__name__}.schema.json"] = _standalone(
            model.model_json_schema()
        )
    docs[f"{ALERTS_TOPIC}/Alert.schema.json"] = _standalone(Alert.model_json_schema())
    event: TypeAdapter[Any] = TypeAdapter(CleverEvent)
    docs[f"{CLEVER_EVENTS_TOPIC}/CleverEvent.schema.json"] = _standalone(event.json_schema())
    return docs


def rendered() -> dict[str, str]:
    """Every committed document, by path relative to `schemas/`, as it is written to disk."""
    files = {f"json/{path}": doc for path, doc in json_schemas().items()}
    files["asyncapi.json"] = asyncapi()
    return {
        path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for path, doc in files.items()
    }


def _standalone(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _ce_headers(source: str) -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
            "content-type",
            "ce_sequence",
            "ce_districtid",
        ],
        "properties": {
            "ce_specversion": {"const": "1.0"},
            "ce_id": {**text, "description": "<key>.<sequence>: the same on a re-publish"},
            "ce_source": {"const": source},
            "ce_type": text,
            "ce_subject": {**text, "description": "the entity id (the message key)"},
            "ce_time": {**text, "format": "date-time"},
            "content-type": {"const": "application/json"},
            "ce_sequence": {**text, "description": "per key, as in data.sequence"},
            "ce_districtid": text,
            "ce_traceparent": {
                **text,
                "description": "W3C trace context (CloudEvents distributed tracing extension)",
            },
            h.TRACEPARENT: {**text, "description": "W3C trace context, the same"},
        },
    }


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0: the service's four topics, from the service's point of view."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _unique_models()],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs["$defs"])
    event: TypeAdapter[Any] = TypeAdapter(CleverEvent)
    # Clever's own models are prefixed: several share a name with ours (School, Section, ...).
    clever = event.json_schema(ref_template="#/components/schemas/Clever{model}")
    schemas.update({f"Clever{name}": s for name, s in clever.pop("$defs", {}).items()})
    schemas["CleverEvent"] = clever

    messages: dict[str, Any] = {}
    key_text = {"type": "string"}
    inbound_headers: dict[str, Any] = {
        "type": "object",
        "required": [h.EVENT_ID, h.SOURCE],
        "properties": {
            h.EVENT_ID: {"type": "string"},
            h.EVENT_TYPE: {"type": "string"},
            h.SOURCE: {"enum": list(h.SOURCES)},
            h.RECEIVED_AT: {"type": "string", "format": "date-time"},
            h.TRACEPARENT: {"type": "string", "description": "W3C trace context"},
        },
    }
    messages["cleverEvent"] = {
        "name": "CleverEvent",
        "title": "A Clever v3 event, as received",
        "headers": inbound_headers,
        "payload": {"$ref": "#/components/schemas/CleverEvent"},
        "bindings": {"kafka": {"key": {**key_text, "description": "district id"}}},
    }
    messages["deadLetter"] = {
        "name": "DeadLetter",
        "title": "A Clever event the consumer could not apply",
        "headers": {
            **inbound_headers,
            "required": [*inbound_headers["required"], h.DLQ_ERROR, h.DLQ_ORIGIN, h.DLQ_AT],
            "properties": {
                **inbound_headers["properties"],
                h.DLQ_ERROR: {"type": "string", "description": "why (no SQL, no values)"},
                h.DLQ_ORIGIN: {"type": "string", "description": "<topic>/<partition>/<offset>"},
                h.DLQ_AT: {"type": "string", "format": "date-time"},
            },
        },
        "payload": {"$ref": "#/components/schemas/CleverEvent"},
        "bindings": {"kafka": {"key": {**key_text, "description": "district id"}}},
    }
    change_refs = {}
    for ce_type, model in CHANGE_TYPES.items():
        name = ce_type.removeprefix("roster.").replace(".", "_")
        messages[name] = {
            "name": ce_type,
            "headers": _ce_headers(CHANGES_SOURCE),
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "bindings": {"kafka": {"key": {**key_text, "description": "entity id"}}},
        }
        change_refs[name] = {"$ref": f"#/components/messages/{name}"}
    alert_refs = {}
    for ce_type in ALERT_MESSAGE_TYPES:
        name = ce_type.replace(".", "_")
        messages[name] = {
            "name": ce_type,
            "headers": _ce_headers(ALERTS_SOURCE),
            "payload": {"$ref": "#/components/schemas/Alert"},
            "bindings": {"kafka": {"key": {**key_text, "description": "student id"}}},
        }
        alert_refs[name] = {"$ref": f"#/components/messages/{name}"}

    channels = {
        "cleverEvents": {
            "address": CLEVER_EVENTS_TOPIC,
            "description": "Every Clever event accepted by a door (webhook, poller, backfill).",
            "messages": {"cleverEvent": {"$ref": "#/components/messages/cleverEvent"}},
        },
        "cleverEventsDlq": {
            "address": CLEVER_EVENTS_DLQ_TOPIC,
            "description": "Events that could not be applied; re-driven by `roster redrive`.",
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        },
        "rosterChanges": {
            "address": CHANGES_TOPIC,
            "description": "One message per committed change to a student, teacher, section, "
            "school or enrollment. Drop a message whose sequence is not above the last seen "
            "for its key.",
            "messages": change_refs,
        },
        "rosterAlerts": {
            "address": ALERTS_TOPIC,
            "description": "The single-school rule's alerts, one message per transition.",
            "messages": alert_refs,
        },
    }

    def op(action: str, channel: str, summary: str) -> dict[str, Any]:
        return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "roster-sync",
            "version": "1.0.0",
            "description": "Clever rosters into the product roster: the topics the service "
            "reads and writes. Generated from schemas/ by `roster schemas`; do not edit.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": {
            "publishCleverEvents": op("send", "cleverEvents", "The doors publish events."),
            "consumeCleverEvents": op("receive", "cleverEvents", "The consumer applies them."),
            "publishDeadLetters": op("send", "cleverEventsDlq", "Events that failed."),
            "publishRosterChanges": op("send", "rosterChanges", "The relay, from the outbox."),
            "publishRosterAlerts": op("send", "rosterAlerts", "The relay, from the outbox."),
        },
        "components": {"schemas": schemas, "messages": messages},
    }
