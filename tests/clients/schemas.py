"""Validation against the official OpenAI schemas (tests/clients/openai-chat-schemas.json and
openai-responses-schemas.json, copies of ../shared/reference/).

The file mixes OpenAPI 3.0 `nullable: true` with JSON Schema; `nullable` is translated to
a `null` alternative before validating, as OpenAPI 3.0 defines it.
"""
import copy
import json
import pathlib

import jsonschema

_HERE = pathlib.Path(__file__).parent
_RAW = json.loads((_HERE / "openai-chat-schemas.json").read_text())
_RESPONSES_RAW = json.loads((_HERE / "openai-responses-schemas.json").read_text())


def _translate(node):
    if isinstance(node, dict):
        node = {k: _translate(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_translate(v) for v in node]
    return node


_COMPONENTS = _translate(copy.deepcopy(_RAW["components"]))
_RESPONSES_COMPONENTS = _translate(copy.deepcopy(_RESPONSES_RAW["components"]))


def validate(instance, name):
    schema = {"$ref": f"#/components/schemas/{name}", "components": _COMPONENTS}
    jsonschema.Draft202012Validator(schema).validate(instance)


def validate_responses(instance, name):
    """Against the Responses API schemas (`Response`, `ResponseStreamEvent`, ...)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _RESPONSES_COMPONENTS}
    jsonschema.Draft202012Validator(schema).validate(instance)
