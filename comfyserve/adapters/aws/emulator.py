"""moto's server as a local AWS for tests and benchmarks: a free loopback port and dummy credentials, so that
no request can reach a real account. moto is a development dependency, imported only when a server starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def offline_environment(region: str) -> dict[str, str]:
    """Credentials and settings that make boto3 talk to nothing but the endpoint it is given."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def moto_server(region: str = "us-east-1") -> Iterator[str]:
    """Yield the endpoint URL of a running moto server; the process environment is restored on exit."""
    from moto.server import ThreadedMotoServer

    env = offline_environment(region)
    saved = {name: os.environ.get(name) for name in (*env, "AWS_PROFILE")}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
