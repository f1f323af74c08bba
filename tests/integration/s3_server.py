"""An in-process S3 server (moto) for tests that need a real HTTP endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto on a free port of 127.0.0.1; yield its endpoint ``"127.0.0.1:<port>"``.

    The server keeps its buckets in moto's process-wide memory, so give each test
    its own bucket name. It accepts any credentials; none need to be in the environment.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"{host}:{port}"
    finally:
        server.stop()
