"""The webhook door's OpenAPI entry, written by hand: the door is a plain ASGI endpoint (see
`service/webhooks/routes.py`), so FastAPI cannot derive it."""

from __future__ import annotations

from typing import Any

from schemas.clever import EVENT_ADAPTER, EventsPage
from service.webhooks.routes import PATH


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The webhook's OpenAPI path item, and the component schemas it refers to."""
    template = "#/components/schemas/{model}"
    event_schema = EVENT_ADAPTER.json_schema(ref_template=template)
    page_schema = EventsPage.model_json_schema(ref_template=template)
    components = {**event_schema.pop("$defs", {}), **page_schema.pop("$defs", {})}
    components["CleverEvent"] = event_schema
    components["EventsPage"] = page_schema
    header = [
        {
            "name": name,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
        }
        for name, description in (
            ("webhook-id", "Standard Webhooks message id (the same on retries)"),
            ("webhook-timestamp", "Unix seconds; within 300 s of the server's clock"),
            ("webhook-signature", "space-separated v1,<base64 HMAC-SHA256> signatures"),
            ("traceparent", "W3C trace context, carried onto the Kafka records"),
        )
    ]
    error = {"application/json": {"schema": {"type": "object"}}}
    operation = {
        "tags": ["webhook"],
        "summary": "Receive Clever events signed with Standard Webhooks",
        "operationId": "receive_clever_events",
        "parameters": header,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": template.format(model="CleverEvent")},
                            {"$ref": template.format(model="EventsPage")},
                        ]
                    }
                }
            },
        },
        "responses": {
            "202": {
                "description": "Every new event is durably in Kafka",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "accepted": {"type": "integer"},
                                "duplicates": {"type": "integer"},
                            },
                        }
                    }
                },
            },
            "400": {
                "description": "Malformed JSON or an invalid event; nothing accepted",
                "content": error,
            },
            "401": {
                "description": "Missing or bad signature, or timestamp out of tolerance",
                "content": error,
            },
            "413": {
                "description": "Body over the byte limit, or too many events",
                "content": error,
            },
            "415": {"description": "Not JSON", "content": error},
            "503": {
                "description": "Kafka or the database could not acknowledge in time, or too many "
                "events wait already",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": error,
            },
        },
    }
    return {PATH: {"post": operation}}, components
