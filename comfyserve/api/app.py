"""The HTTP API: one route table, served by the Lambda ``api`` handler and by the local server alike.

``build_app(service, auth)`` returns a Powertools ``APIGatewayRestResolver`` (request validation on); feed it
API Gateway REST proxy events with ``app.resolve(event, context)``. An instance resolves one request at a time
(Lambda does anyway); the local server keeps a pool of instances to resolve requests concurrently
(:mod:`comfyserve.localstack.resolver_pool`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from comfyserve.api import routes_comfyui, routes_comfyui_more, routes_v1, routes_v2
from comfyserve.api.auth import Authenticator
from comfyserve.api.bodies import loads_json
from comfyserve.api.errors import register_error_handlers
from comfyserve.api.gate import RequestGate
from comfyserve.service.job_service import JobService


class InstanceRestResolver(APIGatewayRestResolver):
    """Keeps the request being resolved on the instance: Powertools keeps it on a class attribute shared by
    every resolver of the process (its own ``HttpResolver`` moves it the same way), so two instances could not
    resolve at once. The per-request ``context`` is the instance's already."""

    _event: BaseProxyEvent | None = None
    _lambda_context: Any = None

    @property  # type: ignore[override]
    def current_event(self) -> BaseProxyEvent:
        if self._event is None:
            raise RuntimeError("no request is being resolved")
        return self._event

    @current_event.setter
    def current_event(self, value: BaseProxyEvent) -> None:
        self._event = value

    @property
    def lambda_context(self) -> Any:
        return self._lambda_context

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._lambda_context = value

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self._event = self._to_proxy_event(dict(event))
        self._lambda_context = context
        try:
            return super().resolve(event, context)
        finally:
            self._event = self._lambda_context = None


def build_app(service: JobService, auth: Authenticator) -> APIGatewayRestResolver:
    # A response that does not match its model is our bug: a 500, never a 4xx.
    app = InstanceRestResolver(
        enable_validation=True,
        response_validation_error_http_code=500,
        strip_prefixes=["/api"],
        json_body_deserializer=loads_json,
    )
    gate = RequestGate(auth, service.settings)
    app.use(middlewares=[gate.middleware()])
    register_error_handlers(app, gate)
    routes_v1.register(app, service)
    routes_comfyui.register(app, service)
    routes_comfyui_more.register(app, service)
    routes_v2.register(app, service)
    return app
