"""The HTTP API: one route table, served by the Lambda ``api`` handler and by the local server alike.

``build_app(service, auth)`` returns a Powertools ``APIGatewayRestResolver`` (request validation on); feed it
API Gateway REST proxy events with ``app.resolve(event, context)``. Powertools keeps the current event in
class-level state, so this resolver handles one request at a time per process (Lambda does anyway); a
threaded server may call it from many threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from comfyserve.api import routes_comfyui, routes_comfyui_more, routes_v1, routes_v2
from comfyserve.api.auth import Authenticator
from comfyserve.api.bodies import loads_json
from comfyserve.api.errors import register_error_handlers
from comfyserve.api.gate import RequestGate
from comfyserve.service.job_service import JobService

_resolve_lock = threading.Lock()


class SerializedRestResolver(APIGatewayRestResolver):
    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        with _resolve_lock:
            return super().resolve(event, context)


def build_app(service: JobService, auth: Authenticator) -> APIGatewayRestResolver:
    # A response that does not match its model is our bug: a 500, never a 4xx.
    app = SerializedRestResolver(
        enable_validation=True,
        response_validation_error_http_code=500,
        strip_prefixes=["/api"],
        json_body_deserializer=loads_json,
    )
    gate = RequestGate(auth, service.settings)
    app.use(middlewares=[gate.middleware])
    register_error_handlers(app, gate)
    routes_v1.register(app, service)
    routes_comfyui.register(app, service)
    routes_comfyui_more.register(app, service)
    routes_v2.register(app, service)
    return app
