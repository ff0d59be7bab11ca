"""The OpenAPI schema's error responses, added to every operation by rule, so the
schema documents every status the API answers (tests/api/test_schema_conformance.py
checks the answers against it with Schemathesis).

- 400 ``ValidationError`` (``{"field": [...]}``, or a list for list bodies): operations
  that take a request body or query parameters.
- 401 ``ErrorDetail``: views that authenticate (a bad token is a 401 even where no login
  is needed).
- 403 ``ErrorDetail``: views with a permission other than AllowAny.
- 404 ``ErrorDetail``: paths with an id; paginated lists (a page past the end).
- 409 ``ErrorDetail``: POST/PUT/PATCH/DELETE of views that authenticate (refused
  transitions, short stock, unpaid-order limit, objects still referenced).
- 415 ``ErrorDetail``: operations that take a request body (a body no parser reads).
- 429 ``ErrorDetail`` with ``Retry-After``: views with throttles.
- 503 ``ErrorDetail`` with ``Retry-After``: every operation (the database is unreachable).

A view's own ``@extend_schema(responses={...})`` wins for the codes it names.

Operations are tagged by resource (the path's first segment after ``/api/v1``, see
SCHEMA_PATH_PREFIX) and get a summary made from their operation id where the view
gives none ("List products", "Orders: mark paid"). The token scheme is named ``Token``
so Swagger UI's Authorize lists it first, and says what to send.
Base package: no domain imports.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers
from rest_framework.permissions import AllowAny

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
DESCRIPTIONS = {
    "400": "Invalid input: the body names each invalid field.",
    "401": "Not signed in, or invalid credentials.",
    "403": "Signed in without the right to do this.",
    "404": "No such object (or another user's), or a page past the end.",
    "409": "The current state forbids this (the message says why).",
    "415": "Unsupported media type: send the body as JSON.",
    "429": "Too many requests; retry after Retry-After seconds.",
    "503": "The service is temporarily unavailable; retry after Retry-After seconds.",
}
VALIDATION_ERROR = {
    "description": "DRF validation errors: field name → messages (nested for nested fields), "
    "`non_field_errors`, or `detail`; a list with one entry per item for list bodies.",
    "oneOf": [{"type": "object", "additionalProperties": {}}, {"type": "array", "items": {}}],
}


class ErrorDetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


# The standard actions' summaries: {verb}; a custom action reads "Resource: action".
VERBS = {
    "list": "List",
    "retrieve": "Get",
    "create": "Create",
    "partial_update": "Update",  # before "update": matched as a suffix too
    "update": "Replace",
    "destroy": "Delete",
}


def _singular(word: str) -> str:
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") else word


class TokenScheme(OpenApiAuthenticationExtension):
    """DRF's token authentication, named so that it sorts before the session cookie."""

    target_class = "rest_framework.authentication.TokenAuthentication"
    name = "Token"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Send the header "Authorization: Token <key>" (type "Token <key>" into Authorize). '
            "Get a key from POST /api/v1/auth/token/ with a username and password.",
        }


class CelesteAutoSchema(AutoSchema):
    def get_summary(self):
        summary = super().get_summary()
        if summary:
            return summary
        resource = self.get_tags()[0]
        rest = self.get_operation_id().removeprefix(resource.replace("-", "_") + "_")
        for action, verb in VERBS.items():
            if rest == action:
                noun = resource.replace("-", " ")
                return f"{verb} {noun if action == 'list' else _singular(noun)}"
            if rest.endswith("_" + action):
                return f"{resource.replace('-', ' ').capitalize()}: {rest.removesuffix('_' + action).replace('_', ' ')}"
        return None

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if code in responses:
                continue
            schema = self._validation_error_ref() if code == "400" else self._error_detail_ref()
            responses[code] = {
                "content": {"application/json": {"schema": schema}},
                "description": DESCRIPTIONS[code],
                **({"headers": RETRY_AFTER} if code in ("429", "503") else {}),
            }
        return dict(sorted(responses.items()))

    def _error_codes(self) -> list[str]:
        parameters = self._get_parameters()
        authenticates = bool(self.view.authentication_classes)
        codes = ["503"]
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        if has_body or any(p["in"] == "query" for p in parameters):
            codes.append("400")
        if authenticates:
            codes.append("401")
        if any(not issubclass(permission, AllowAny) for permission in self._permission_classes()):
            codes.append("403")
        if any(p["in"] == "path" for p in parameters) or any(p["name"] == "page" for p in parameters):
            codes.append("404")
        if self.method in UNSAFE and authenticates:
            codes.append("409")
        if has_body:
            codes.append("415")
        if self.view.throttle_classes:
            codes.append("429")
        return codes

    def _permission_classes(self) -> list[type]:
        return [type(permission) for permission in self.view.get_permissions()]

    def _validation_error_ref(self):
        component = ResolvedComponent(
            name="ValidationError", type=ResolvedComponent.SCHEMA, object="ValidationError", schema=VALIDATION_ERROR
        )
        self.registry.register_on_missing(component)
        return component.ref

    def _error_detail_ref(self):
        return self.resolve_serializer(ErrorDetailSerializer, "response").ref
