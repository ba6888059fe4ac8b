"""The OpenAPI 3.1 document of the operator API, served at ``/api/v1/openapi.json``
(docs/api.md is the prose version; a test checks both against the router).

>>> doc = openapi_document()
>>> doc["openapi"], sorted(doc["paths"])[:2]
('3.1.0', ['/api/v1/devices', '/api/v1/devices/{device_id}'])
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERR = _json(_ref("Error"), "error (one line)")
_AUTH = {"401": _json(_ref("Error"), "no, or a wrong, admin token")}
_STORE = {"503": _json(_ref("Error"), "no device store, or the database failed")}
_NULL_STR = {"type": ["string", "null"]}
_NULL_NUM = {"type": ["number", "null"]}
_MISSING = {
    "type": "array",
    "items": {"type": "integer"},
    "description": "--workers only: workers that did not answer (left out)",
}
_DEVICE_ID = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 64},
    "description": "the device id (MAC address) as the device sends it",
}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "LiveSession": {
        "type": "object",
        "properties": {
            "session_id": {"type": "string"},
            "device_id": {"type": "string"},
            "client_id": {"type": "string"},
            "remote": {"type": "string"},
            "transport": {"type": "string", "examples": ["websocket", "mqtt"]},
            "protocol_version": {"type": "integer"},
            "profile": _NULL_STR,
            "connected_at": {"type": "number", "description": "epoch seconds"},
            "state": {
                "type": "string",
                "enum": [
                    "connecting",
                    "idle",
                    "listening",
                    "recognising",
                    "thinking",
                    "synthesising",
                    "speaking",
                    "closed",
                ],
            },
            "listen_mode": {"type": "string", "enum": ["auto", "manual", "realtime"]},
            "speaker": _NULL_STR,
            "turn": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "kind": {"type": "string"},
                            "stage": {"type": "string"},
                            "elapsed_ms": {"type": "number"},
                        },
                    },
                ]
            },
            "turns": {"type": "integer", "description": "turns started in this session"},
            "worker": {
                "type": "integer",
                "description": "the worker process serving it (--workers only)",
            },
            "last_turn": {
                "oneOf": [{"type": "null"}, {"type": "object"}],
                "description": "the latest finished turn's latency record",
            },
            "lane": {
                "type": "object",
                "properties": {
                    "lag_ms": {"type": "number", "description": "lag of the latest frames"},
                    "lag_max_ms": {"type": "number"},
                    "queued": {"type": "integer"},
                    "frames_in": {"type": "integer"},
                    "frames_processed": {"type": "integer"},
                    "frames_lost": {"type": "integer"},
                },
            },
        },
    },
    "Device": {
        "type": "object",
        "properties": {
            "device_id": {"type": "string"},
            "client_id": _NULL_STR,
            "board": _NULL_STR,
            "firmware": _NULL_STR,
            "first_seen": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "profile": {**_NULL_STR, "description": "null: the default profile"},
        },
    },
    "StoredSession": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "device_id": {"type": "string"},
            "started": {"type": "string", "format": "date-time"},
            "ended": {"type": ["string", "null"], "format": "date-time"},
            "close_reason": _NULL_STR,
            "transport": _NULL_STR,
        },
    },
    "Turn": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "description": "row id; pass as `before` to page"},
            "session_id": {"type": "string"},
            "device_id": {"type": "string"},
            "turn_no": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "examples": ["voice", "text", "greeting", "goodbye"]},
            "text": {**_NULL_STR, "description": "recognised text (null: transcripts off)"},
            "reply": _NULL_STR,
            "speaker": _NULL_STR,
            "latency": {
                "type": ["object", "null"],
                "description": "ms after the end of speech: asr_final_ms, llm_first_token_ms, "
                "tts_first_audio_ms, first_frame_sent_ms, total_ms",
            },
            "outcome": {"type": "string"},
            "error": _NULL_STR,
        },
    },
    "Sample": {
        "type": "object",
        "description": "one stats interval; times in ms, null when nothing was measured",
        "properties": {
            "t": {"type": "number", "description": "end of the interval, epoch seconds"},
            "sessions": {"type": "integer"},
            "turns": {"type": "integer"},
            "frames": {"type": "integer", "description": "frames through the lanes"},
            "ttfa_p50_ms": _NULL_NUM,
            "ttfa_p95_ms": _NULL_NUM,
            "ttfa_max_ms": _NULL_NUM,
            "lane_lag_mean_ms": _NULL_NUM,
            "lane_lag_max_ms": _NULL_NUM,
            "loop_lag_p99_ms": _NULL_NUM,
            "loop_lag_max_ms": _NULL_NUM,
        },
    },
}

_PATHS: dict[str, Any] = {
    "/api/v1/sessions": {
        "get": {
            "summary": "Live sessions of the server (every worker's with --workers)",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer"},
                            "sessions": {"type": "array", "items": _ref("LiveSession")},
                            "workers_missing": _MISSING,
                        },
                    },
                    "live sessions",
                ),
                **_AUTH,
            },
        }
    },
    "/api/v1/devices": {
        "get": {
            "summary": "Devices in the store, most recently seen first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                }
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer"},
                            "devices": {
                                "type": "array",
                                "items": {
                                    "allOf": [
                                        _ref("Device"),
                                        {
                                            "type": "object",
                                            "properties": {"online": {"type": "boolean"}},
                                        },
                                    ]
                                },
                            },
                        },
                    },
                    "devices",
                ),
                "400": _ERR,
                **_AUTH,
                **_STORE,
            },
        }
    },
    "/api/v1/devices/{device_id}": {
        "get": {
            "summary": "One device, its live sessions and its latest 20 stored sessions",
            "parameters": [_DEVICE_ID],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "device": _ref("Device"),
                            "online": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "ids of its live sessions",
                            },
                            "sessions": {"type": "array", "items": _ref("StoredSession")},
                        },
                    },
                    "the device",
                ),
                "404": _json(_ref("Error"), "unknown device"),
                **_AUTH,
                **_STORE,
            },
        },
        "put": {
            "summary": "Map the device to a profile (null: the default); new turns use it",
            "parameters": [_DEVICE_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["profile"],
                            "additionalProperties": False,
                            "properties": {"profile": {"type": ["string", "null"], "minLength": 1}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"device": _ref("Device")}},
                    "the device as stored now",
                ),
                "400": _json(_ref("Error"), "bad body or unknown profile"),
                "404": _json(_ref("Error"), "unknown device"),
                **_AUTH,
                **_STORE,
            },
        },
    },
    "/api/v1/devices/{device_id}/turns": {
        "get": {
            "summary": "The device's turns, newest first, paged by row id",
            "parameters": [
                _DEVICE_ID,
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "before",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1},
                    "description": "only turns with a smaller id (next_before of the "
                    "previous page)",
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "turns": {"type": "array", "items": _ref("Turn")},
                            "next_before": {
                                "type": ["integer", "null"],
                                "description": "pass as before for the next page; null: no more",
                            },
                        },
                    },
                    "a page of turns",
                ),
                "400": _ERR,
                **_AUTH,
                **_STORE,
            },
        }
    },
    "/api/v1/profiles": {
        "get": {
            "summary": "The profile names the configuration defines",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"profiles": {"type": "array", "items": {"type": "string"}}},
                    },
                    "profile names",
                ),
                **_AUTH,
            },
        }
    },
    "/api/v1/reload": {
        "post": {
            "summary": "Reload the configuration files; new turns use it. A broken "
            "configuration is refused and the running one stays",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "applied": {"const": True},
                            "errors": {"type": "array", "maxItems": 0},
                            "messages": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "what changed, and which changed keys only "
                                "a restart applies",
                            },
                        },
                    },
                    "applied",
                ),
                "422": _json(
                    {
                        "type": "object",
                        "properties": {
                            "applied": {"const": False},
                            "errors": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "file: key.path: problem, as `config check`",
                            },
                            "messages": {"type": "array", "maxItems": 0},
                        },
                    },
                    "refused; nothing changed",
                ),
                "501": _json(_ref("Error"), "this server cannot reload"),
                **_AUTH,
            },
        }
    },
    "/api/v1/stats": {
        "get": {
            "summary": "The last hour in 10-s samples: TTFA, lane lag, loop lag, sessions",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "interval_s": {"type": "number"},
                            "span_s": {"type": "number"},
                            "samples": {
                                "type": "array",
                                "items": _ref("Sample"),
                                "description": "oldest first",
                            },
                            "current": {
                                **_ref("Sample"),
                                "description": "the interval in progress",
                            },
                            "workers_missing": _MISSING,
                        },
                    },
                    "samples",
                ),
                **_AUTH,
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document (no token needed)",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1"}},
        }
    },
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document (a new dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xiaozhi-core operator API",
            "version": "1",
            "description": "Live sessions, devices, turns, profiles, reload and stats "
            "of one xiaozhi-core server (docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"adminToken": []}],
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "server.admin.token of the server's configuration",
                }
            },
            "schemas": copy.deepcopy(_SCHEMAS),
        },
        "paths": copy.deepcopy(_PATHS),
    }
