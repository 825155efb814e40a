"""The HTTP API: one Powertools route table (``app.build_app``) served by the Lambda ``api`` handler and by the
local server; ``openapi`` generates its document, ``wiring`` composes it over the AWS adapters."""
