"""The REST API: keys on every route but the health check, usage plan, validation, binary types, logs."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.constructs.api import BINARY_MEDIA_TYPES, VALIDATED_BODIES
from tests.infra.conftest import ROOT, Synth, function_id, only


def _paths(synth: Synth) -> dict[str, str]:
    """Logical id of each API resource -> its full path ('' is the root)."""
    rest_api, _ = only(synth, "AWS::ApiGateway::RestApi")
    resources = synth.resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(name: str) -> str:
        if name not in paths:
            properties = resources[name]["Properties"]
            parent = properties["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent and parent["Fn::GetAtt"][0] == rest_api else path_of(parent["Ref"])
            paths[name] = f"{prefix}/{properties['PathPart']}"
        return paths[name]

    for name in resources:
        path_of(name)
    return paths


def _methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _paths(synth)
    methods = {}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        resource = properties["ResourceId"]
        path = paths[resource["Ref"]] if "Ref" in resource else "/"
        methods[(path, properties["HttpMethod"])] = properties
    return methods


def test_regional_api_with_binary_media_types(template: Any) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        {"EndpointConfiguration": {"Types": ["REGIONAL"]}, "BinaryMediaTypes": list(BINARY_MEDIA_TYPES)},
    )
    assert {"multipart/form-data", "image/*"} <= set(BINARY_MEDIA_TYPES)  # /upload/image in, /view out


def test_every_method_needs_a_key_except_the_health_check(synth: Synth) -> None:
    methods = _methods(synth)
    open_methods = sorted(key for key, properties in methods.items() if not properties.get("ApiKeyRequired"))
    assert open_methods == [("/v1/health", "GET")]
    for key in [("/", "ANY"), ("/{proxy+}", "ANY"), ("/v1/{proxy+}", "ANY"), ("/v1/jobs/{proxy+}", "ANY")]:
        assert methods[key]["ApiKeyRequired"] is True


def test_every_method_proxies_to_the_api_function(synth: Synth) -> None:
    api_function = function_id(synth, "api")
    for properties in _methods(synth).values():
        integration = properties["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert api_function in json.dumps(integration["Uri"])


def test_submissions_are_validated_before_the_function(synth: Synth) -> None:
    methods = _methods(synth)
    validator, validator_properties = only(synth, "AWS::ApiGateway::RequestValidator")
    assert validator_properties["ValidateRequestBody"] is True
    models = synth.resources("AWS::ApiGateway::Model")
    for path, members in VALIDATED_BODIES.items():
        method = methods[(path, "POST")]
        assert method["RequestValidatorId"] == {"Ref": validator}
        schema = models[method["RequestModels"]["application/json"]["Ref"]]["Properties"]["Schema"]
        assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
        assert schema["type"] == "object"
        assert schema.get("required", []) == list(members)
    assert VALIDATED_BODIES["/prompt"] == ("prompt",)


def test_usage_plan_throttles_and_caps_each_key_on_the_stage(synth: Synth) -> None:
    stage, _ = only(synth, "AWS::ApiGateway::Stage")
    _, plan = only(synth, "AWS::ApiGateway::UsagePlan")
    assert plan["Throttle"] == {"RateLimit": 10, "BurstLimit": 20}
    assert plan["Quota"] == {"Limit": 5000, "Period": "DAY"}  # api_quota_per_day from the test context
    assert plan["ApiStages"][0]["Stage"] == {"Ref": stage}


def test_stage_writes_access_logs_with_the_key_id_and_traces(synth: Synth) -> None:
    _, stage = only(synth, "AWS::ApiGateway::Stage")
    access = stage["AccessLogSetting"]
    (log_group,) = [part["Ref"] for part in access["DestinationArn"]["Fn::Join"][1] if isinstance(part, dict)]
    assert synth.template["Resources"][log_group]["Type"] == "AWS::Logs::LogGroup"
    assert json.loads(access["Format"])["apiKeyId"] == "$context.identity.apiKeyId"
    assert stage["TracingEnabled"] is True
    assert stage["MethodSettings"][0]["LoggingLevel"] == "ERROR"


def test_gateway_refusals_use_the_service_error_shape(synth: Synth) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["THROTTLED"]["StatusCode"] == "429"
    assert responses["QUOTA_EXCEEDED"]["StatusCode"] == "429"
    assert responses["INVALID_API_KEY"]["StatusCode"] == "403"
    body = responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    filled = json.loads(body.replace("$context.error.messageString", '"Invalid request body"'))
    assert filled == {
        "error": {
            "type": "invalid_request",
            "message": "Invalid request body",
            "details": "refused by API Gateway",
            "extra_info": {},
        },
        "node_errors": {},
    }


def test_only_api_gateway_may_invoke_the_api_function(synth: Synth) -> None:
    api_function = function_id(synth, "api")
    permissions = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [api_function, "Arn"]}
    ]
    assert permissions and {p["Principal"] for p in permissions} == {"apigateway.amazonaws.com"}
    assert not any("test-invoke-stage" in json.dumps(p["SourceArn"]) for p in permissions)


def _route(synth: Synth, path: str, http_method: str) -> dict[str, Any] | None:
    """The method API Gateway picks for a request: at each level a literal child first, else the greedy
    ``{proxy+}`` child (which takes the rest of the path); on the resource reached, the method or ANY."""
    rest_api, _ = only(synth, "AWS::ApiGateway::RestApi")
    resources = synth.resources("AWS::ApiGateway::Resource")

    def children(parent: str | None) -> dict[str, str]:
        found = {}
        for name, resource in resources.items():
            ref = resource["Properties"]["ParentId"]
            is_root_child = "Fn::GetAtt" in ref and ref["Fn::GetAtt"][0] == rest_api
            if (parent is None and is_root_child) or (parent is not None and ref.get("Ref") == parent):
                found[resource["Properties"]["PathPart"]] = name
        return found

    current: str | None = None
    parts = [part for part in path.split("/") if part]
    while parts:
        level = children(current)
        if parts[0] in level:
            current = level[parts.pop(0)]
        elif "{proxy+}" in level:
            current, parts = level["{proxy+}"], []
        else:
            return None
    methods = {}
    for method in synth.resources("AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        resource = properties["ResourceId"]
        on_root = "Fn::GetAtt" in resource
        if (current is None and on_root) or (current is not None and resource.get("Ref") == current):
            methods[properties["HttpMethod"]] = properties
    return methods.get(http_method) or methods.get("ANY")


def test_every_route_of_the_route_table_reaches_the_function_with_the_right_key_requirement(synth: Synth) -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    checked = 0
    for path, operations in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "some-id", path)
        for http_method, operation in operations.items():
            method = _route(synth, concrete, http_method.upper())
            assert method is not None, f"{http_method.upper()} {path} matches no API Gateway method"
            assert method["ApiKeyRequired"] is (operation.get("security") != []), path
            checked += 1
    assert checked > 20
    assert _route(synth, "/api/prompt", "POST") is not None  # ComfyUI's /api prefix reaches the function too
