"""The OpenAPI 3.1 document of the HTTP API, generated from the action registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .hub import Hub

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}


def _hoist_defs(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's local ``$defs`` into ``components.schemas`` and fix the references."""
    defs = schema.pop("$defs", {})
    components.update(defs)
    text = repr(schema)
    if "#/$defs/" not in text:
        return schema

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else fix(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    fixed: dict[str, Any] = fix(schema)
    return fixed


def openapi_document(hub: Hub) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    for action in sorted(hub.actions.actions.values(), key=lambda a: a.name):
        schema = _hoist_defs(action.input_schema(), components)
        paths[f"/api/{action.name}"] = {
            "post": {
                "operationId": action.name,
                "summary": action.summary,
                "description": action.description,
                "tags": [action.plugin or "core"],
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": schema}},
                },
                "responses": {
                    "200": {
                        "description": "the action's result",
                        "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"result": {}},
                        }}},
                    },
                    **{
                        str(code): {
                            "description": text,
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}
                            }},
                        }
                        for code, text in (
                            (400, "bad input; nothing changed"),
                            (401, "missing, unknown or revoked token"),
                            (403, "not allowed for this peer"),
                            (404, "unknown action, target or message"),
                            (413, "the message is too large"),
                        )
                    },
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meshhub",
            "version": __version__,
            "description": "The hub's HTTP API. Every endpoint is an action; the same actions are "
            "served over the WebSocket protocol and as MCP tools.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
