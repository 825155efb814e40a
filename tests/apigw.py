"""API Gateway REST proxy (v1) events as API Gateway sends them to Lambda; reading the answers back."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

STAGE = "prod"


def rest_event(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    api_key_id: str | None = None,
    binary: bool = False,
) -> dict[str, Any]:
    """``url`` is the path with an optional query string; a dict or list ``body`` is sent as JSON, bytes as
    they are (base64-encoded when ``binary``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    headers = dict(headers or {})
    if isinstance(body, dict | list):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if binary else body.decode()
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {name: [value] for name, value in headers.items()} or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": "09/Apr/2015:12:34:56 +0000",
            "path": f"/{STAGE}{parts.path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "api",
            "requestTimeEpoch": 1428582896000,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": "pytest",
                "user": None,
                "apiKey": "redacted" if api_key_id else None,
                "apiKeyId": api_key_id,
            },
            "domainName": "api.example.com",
            "apiId": "abcdef1234",
        },
        "body": body,
        "isBase64Encoded": binary,
    }


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


def resolve(app: Any, event: dict[str, Any]) -> ApiResponse:
    """Run one event through a resolver, as the Lambda handler does (no Lambda context needed)."""
    return read_response(app.resolve(event, None))


def read_response(raw: Mapping[str, Any]) -> ApiResponse:
    headers = {name: values[-1] for name, values in (raw.get("multiValueHeaders") or {}).items()}
    headers.update(raw.get("headers") or {})
    body = raw.get("body") or ""
    data = base64.b64decode(body) if raw.get("isBase64Encoded") else body.encode()
    return ApiResponse(int(raw["statusCode"]), headers, data)
