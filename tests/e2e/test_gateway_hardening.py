"""The gateway under hostile clients: a real ``ai2text gateway`` process, driven over raw
sockets where the timing of what is sent matters.

Covered: malformed and loosely typed tokens get the uniform 401 without a traceback;
upload bodies are refused from the request head alone (the connection is closed and
the body never read), and unauthenticated senders are bounded and rate-limited per
address; uploads spool under the data directory and respect its disk floor; NUL
characters are a 400 with nothing stored; slow request heads and stalled bodies are
disconnected.

Failed authentications are rate-limited per client address, so every test that fails
one sends from a loopback address of its own (127.0.x.y all reach the server).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.problems import OPENAI_PATHS
from tests.conftest import fresh_database
from tests.e2e.gateway_harness import (
    AUDIENCE,
    PROBLEM,
    READ,
    WRITE,
    Gateway,
    Signer,
    b64url,
    b64url_json,
    bearer,
    claims,
    new_rsa_key,
    public_pem,
    sized_wav,
    start_gateway,
    unique_silence,
)
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.slow

FAILURES_PER_MINUTE = 5
HEADER_TIMEOUT_S = 2
BODY_IDLE_TIMEOUT_S = 2
BIG = 64 * 1024 * 1024
CHUNK = 64 * 1024
_addresses = itertools.count(1)


# -- services ------------------------------------------------------------------------------


def _start(root: Path, database_url: str, extra_env: dict[str, str]) -> Gateway:
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    env = {
        "AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem),
        "AI2TEXT_GATEWAY__AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE),
        "AI2TEXT_GATEWAY__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "AI2TEXT_GATEWAY__BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_TIMEOUT_S),
        **extra_env,
    }
    return start_gateway("gateway", root, database_url, Signer(key), env)


@pytest.fixture(scope="module")
def gw(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``ai2text gateway`` alone: nothing transcribes, uploads stay queued."""
    for database_url in fresh_database(pg_server):
        gateway = _start(tmp_path_factory.mktemp("hard"), database_url, {})
        yield gateway
        assert gateway.service.stop() == 0


@pytest.fixture
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.client() as client:
        yield client


def own_address() -> str:
    """A loopback address no other test sends from."""
    n = next(_addresses)
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


def client_from(gw: Gateway, address: str) -> httpx.Client:
    return gw.client(transport=httpx.HTTPTransport(local_address=address))


# -- raw HTTP ------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(gw: Gateway, address: str = "127.0.0.1") -> socket.socket:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10, source_address=(address, 0))


def read_response(conn: socket.socket, timeout: float = 10) -> RawResponse:
    """One response, read within ``timeout`` seconds."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the connection closed mid-response"
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def send_until_refused(conn: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes; return how many went before the server refused more."""
    conn.settimeout(10)
    chunk = b"\0" * CHUNK
    sent = 0
    try:
        while sent < total:
            conn.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return sent
    return sent


def closed_within(conn: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``conn`` (EOF or reset) within ``seconds``."""
    conn.settimeout(seconds)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def multipart_head(path: str, headers: dict[str, str], boundary: str, length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Type: multipart/form-data; boundary={boundary}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def file_part(
    boundary: str, filename: bytes, data: bytes, fields: dict[str, bytes] | None = None
) -> bytes:
    """A multipart body: ``fields`` first, then one file part, with raw bytes in its name."""
    body = b""
    for name, value in (fields or {}).items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value + b"\r\n"
    body += f"--{boundary}\r\n".encode()
    body += b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
    body += b"Content-Type: audio/wav\r\n\r\n" + data
    return body + f"\r\n--{boundary}--\r\n".encode()


def post_raw(gw: Gateway, path: str, token: str, body: bytes, boundary: str) -> RawResponse:
    with connect(gw) as conn:
        conn.sendall(multipart_head(path, bearer(token), boundary, len(body)) + body)
        return read_response(conn, timeout=60)


# -- what the server holds ---------------------------------------------------------------


def open_files(gw: Gateway) -> list[str]:
    """Where the gateway process's open file descriptors point."""
    fds = Path(f"/proc/{gw.service.pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            continue
    return targets


def staged(gw: Gateway) -> list[str]:
    """Open files under the data directory's temp root (the process's staging dir)."""
    root = str(gw.data_dir / "tmp") + os.sep
    return [t for t in open_files(gw) if t.startswith(root)]


def in_system_tmp(gw: Gateway) -> list[str]:
    """Open files directly in the system temp directory, where Starlette spools."""
    tmp = tempfile.gettempdir()
    return [t for t in open_files(gw) if os.path.dirname(t.removesuffix(" (deleted)")) == tmp]


def counts(gw: Gateway) -> tuple[int, int]:
    rows = gw.sql("SELECT count(*) AS n FROM audio")[0]["n"]
    return rows, len(gw.stored_objects())


def assert_problem(
    response: httpx.Response | RawResponse, status: int, path: str = ""
) -> dict[str, Any]:
    """The refusal's document; on OpenAI's paths in OpenAI's error shape, as its client reads."""
    if isinstance(response, httpx.Response):
        response = RawResponse(response.status_code, dict(response.headers), response.content)
    assert response.status == status, response.body
    assert b"Traceback" not in response.body
    if path in OPENAI_PATHS:
        assert response.headers["content-type"] == "application/json", response.headers
        error: dict[str, Any] = json.loads(response.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return {"detail": error["message"], "status": status, "code": error["code"]}
    assert response.headers["content-type"] == PROBLEM, response.headers
    problem: dict[str, Any] = json.loads(response.body)
    assert problem["status"] == status
    return problem


# -- 1 and 2. tokens: exact claims, and malformed ones get the uniform 401 ------------------


def _nested_header_token(depth: int, closed: bool) -> str:
    """A header whose ``x`` is a list nested ``depth`` levels (unclosed: cut short)."""
    nesting = b"[" * depth + (b"]" * depth if closed else b"")
    header = b'{"alg":"RS256","x":' + nesting + b"}"
    return f"{b64url(header)}.{b64url_json(claims())}.x"


TOKENS: dict[str, Callable[[Gateway], str]] = {
    "audience list holding ours": lambda gw: gw.signer.token(*READ, aud=[AUDIENCE]),
    "exp a numeric string": lambda gw: gw.signer.token(*READ, exp="9999999999"),
    "iat a numeric string": lambda gw: gw.signer.token(*READ, iat=str(int(time.time()))),
    "nbf a numeric string": lambda gw: gw.signer.token(*READ, nbf=str(int(time.time()))),
    "header nested 5,000 levels": lambda gw: _nested_header_token(5000, closed=True),
    "header nested past the parser's limit": lambda gw: _nested_header_token(1100, closed=False),
    "header that is a list": lambda gw: f"{b64url(b'[]')}.{b64url_json(claims())}.x",
    "header not base64": lambda gw: f"%%%.{b64url_json(claims())}.x",
    "token of 64 KiB": lambda gw: "a" * 65536,
}


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_loose_or_malformed_token_gets_the_uniform_401_and_no_traceback(
    gw: Gateway, case: str
) -> None:
    with client_from(gw, own_address()) as client:
        anonymous = client.get("/v1/audio")
        logged = len(gw.service.log_path.read_bytes())
        response = client.get("/v1/audio", headers=bearer(TOKENS[case](gw)))

    assert_problem(response, 401)
    assert response.content == anonymous.content
    assert response.headers["www-authenticate"] == anonymous.headers["www-authenticate"]
    wait_until(
        lambda: gw.service.count("authentication failed") >= 2,
        timeout=10,
        what="the refusal to be logged",
    )
    since = gw.service.log_path.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in since and "RecursionError" not in since, since[-3000:]
    assert '"level": "error"' not in since, since[-3000:]


# -- 3. bodies are refused from the request head, before a byte is read ---------------------


def _credentials(gw: Gateway, case: str) -> dict[str, str]:
    if case == "no token":
        return {}
    if case == "bad token":
        return bearer(gw.signer.token(*WRITE)[:-8] + "AAAAAAAA")
    return bearer(gw.signer.token(*READ))  # valid, but without audio:write


@pytest.mark.parametrize("path", ["/v1/audio", "/v1/audio/transcriptions"])
@pytest.mark.parametrize(
    ("case", "status"), [("no token", 401), ("bad token", 401), ("no audio:write", 403)]
)
def test_upload_without_a_valid_token_is_refused_before_its_body_is_sent(
    gw: Gateway, path: str, case: str, status: int
) -> None:
    before = counts(gw)
    boundary = uuid.uuid4().hex
    with connect(gw, own_address()) as conn:
        conn.sendall(multipart_head(path, _credentials(gw, case), boundary, BIG))
        # Not one byte of the 64 MiB body has been sent, and the answer is already here.
        response = read_response(conn)
        assert_problem(response, status, path)
        assert response.headers["connection"] == "close"
        # The server closed the connection: the body cannot even be sent.
        sent = send_until_refused(conn, BIG)
    assert sent < BIG // 4, f"the server took {sent} bytes of a refused body"
    assert counts(gw) == before
    assert staged(gw) == [] and in_system_tmp(gw) == []


@pytest.mark.parametrize("path", ["/v1/audio", "/v1/no-such-route", "/healthz"])
def test_unauthenticated_chunked_body_is_not_read_and_the_connection_is_closed(
    gw: Gateway, path: str
) -> None:
    """Whatever the route answers (401, 404, 405), the unread body ends the connection."""
    with connect(gw, own_address()) as conn:
        conn.sendall(multipart_head(path, {}, "b", None))
        response = read_response(conn)
        assert 400 <= response.status < 500
        assert response.headers["connection"] == "close"
        sent = send_until_refused(conn, BIG)
    assert sent < BIG // 4, f"the server read {sent} bytes of an unauthenticated body"


def test_unauthenticated_request_may_send_only_a_few_kib(gw: Gateway) -> None:
    """A declared body over the anonymous bound is refused at once (the JSON limit is 1 MiB)."""
    with connect(gw, own_address()) as conn:
        head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 524288\r\n\r\n"
        conn.sendall(head)
        response = read_response(conn)
        assert_problem(response, 413)
        assert closed_within(conn, 10)


def test_failed_authentications_are_rate_limited_per_address(gw: Gateway) -> None:
    noisy, quiet = own_address(), own_address()
    with client_from(gw, noisy) as client:
        statuses = [client.get("/v1/audio").status_code for _ in range(FAILURES_PER_MINUTE)]
        assert statuses == [401] * FAILURES_PER_MINUTE
        limited = client.get("/v1/audio", headers=bearer("not-a-token"))
        assert_problem(limited, 429)
        assert 1 <= int(limited.headers["retry-after"]) <= 60 // FAILURES_PER_MINUTE + 1
        # X-Forwarded-For is not believed without a configured trusted proxy.
        spoofed = client.get("/v1/audio", headers={"X-Forwarded-For": own_address()})
        assert spoofed.status_code == 429
        # A valid token from the same address is served all the same.
        token = gw.signer.token(*READ)
        assert client.get("/v1/audio", headers=bearer(token)).status_code == 200
    with client_from(gw, quiet) as client:
        assert client.get("/v1/audio").status_code == 401


# -- 3. spooling under the data directory, and its disk floor -------------------------------


def test_upload_spools_in_the_staging_directory_not_the_system_temp_dir(gw: Gateway) -> None:
    token = gw.signer.token(*WRITE)
    boundary = uuid.uuid4().hex
    body = file_part(boundary, b"spooled.wav", sized_wav(4 * 1024 * 1024))
    half = len(body) // 2
    with connect(gw) as conn:
        conn.sendall(multipart_head("/v1/audio", bearer(token), boundary, len(body)))
        conn.sendall(body[:half])  # past the 1 MiB kept in memory: it is on disk now
        spooled = wait_until(lambda: staged(gw), timeout=30, what="the upload to spool")
        assert in_system_tmp(gw) == [], in_system_tmp(gw)
        staging_root = gw.data_dir / "tmp"
        assert all(Path(s).parent.parent == staging_root for s in spooled), spooled
        # The gateway process's own directory (named by host, pid and start time).
        assert all(f"p{gw.service.pid}-" in Path(s).parent.name for s in spooled), spooled
        conn.sendall(body[half:])
        response = read_response(conn, timeout=60)
    assert response.status == 201, response.body
    wait_until(lambda: not staged(gw), timeout=30, what="the spooled file to be closed")


@pytest.mark.parametrize(
    "cut", [lambda body: body[: len(body) - 40], lambda body: b"not multipart at all"]
)
def test_multipart_body_cut_short_or_garbled_is_a_400_and_nothing_stays_spooled(
    gw: Gateway, cut: Callable[[bytes], bytes]
) -> None:
    before = counts(gw)
    boundary = uuid.uuid4().hex
    body = cut(file_part(boundary, b"cut.wav", sized_wav(2 * 1024 * 1024)))
    response = post_raw(gw, "/v1/audio", gw.signer.token(*WRITE), body, boundary)

    problem = assert_problem(response, 400)
    assert "multipart" in problem["detail"], problem
    assert counts(gw) == before
    wait_until(lambda: not staged(gw), timeout=30, what="the spooled part to be closed")


def test_upload_is_refused_with_503_while_the_disk_is_below_the_floor(
    pg_server: Any, tmp_path: Path
) -> None:
    for database_url in fresh_database(pg_server):
        full = _start(tmp_path, database_url, {"AI2TEXT_WATCH__MIN_FREE_BYTES": str(2**60)})
        try:
            boundary = uuid.uuid4().hex
            body = file_part(boundary, b"floor.wav", unique_silence())
            response = post_raw(full, "/v1/audio", full.signer.token(*WRITE), body, boundary)
            problem = assert_problem(response, 503)
            assert "disk" in problem["detail"]
            assert int(response.headers["retry-after"]) > 0
            assert counts(full) == (0, 0)
        finally:
            assert full.service.stop() == 0


# -- 4. NUL characters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "filename"),
    [
        ("/v1/audio", {}, b"bad\x00name.wav"),
        ("/v1/audio/transcriptions", {}, b"bad\x00name.wav"),
        ("/v1/audio/transcriptions", {"language": b"e\x00n"}, b"ok.wav"),
        ("/v1/audio/transcriptions", {"prompt": b"hello\x00world"}, b"ok.wav"),
        ("/v1/audio/transcriptions", {"mo\x00del": b"whisper-1"}, b"ok.wav"),
    ],
)
def test_nul_in_an_upload_is_a_400_and_nothing_is_stored(
    gw: Gateway, path: str, fields: dict[str, bytes], filename: bytes
) -> None:
    before = counts(gw)
    boundary = uuid.uuid4().hex
    body = file_part(boundary, filename, unique_silence(), fields)
    response = post_raw(gw, path, gw.signer.token(*WRITE), body, boundary)

    problem = assert_problem(response, 400, path)
    assert "NUL" in problem["detail"], problem
    assert counts(gw) == before


@pytest.mark.parametrize(
    "target",
    [
        "/v1/search?q=budget%00",
        "/v1/audio?language=e%00n",
        "/v1/datasets/1?name=default%00",
        "/v1/datasets/1/files/train.jsonl?name=x%00y",
        "/v1/audio/%00",
        "/v1/audio?%00=1",
    ],
)
def test_nul_in_a_path_or_query_is_a_400(gw: Gateway, http: httpx.Client, target: str) -> None:
    token = gw.signer.token(*READ, "datasets:read")
    response = http.get(target, headers=bearer(token))

    problem = assert_problem(response, 400)
    assert "NUL" in problem["detail"], problem


# -- 5. slow clients ---------------------------------------------------------------------------


def test_request_head_that_stops_arriving_is_closed(gw: Gateway) -> None:
    with connect(gw) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        started = time.monotonic()
        assert closed_within(conn, HEADER_TIMEOUT_S + 10), "a half-sent head kept its connection"
    assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.5


def test_upload_body_that_stalls_is_closed(gw: Gateway) -> None:
    before = counts(gw)
    boundary = uuid.uuid4().hex
    body = file_part(boundary, b"stalled.wav", unique_silence())
    with connect(gw) as conn:
        conn.sendall(
            multipart_head("/v1/audio", bearer(gw.signer.token(*WRITE)), boundary, len(body))
        )
        conn.sendall(body[: len(body) // 2])
        assert closed_within(conn, BODY_IDLE_TIMEOUT_S + 10), "a stalled body kept its connection"
    assert counts(gw) == before
    wait_until(lambda: not staged(gw), timeout=30, what="the partial upload to be dropped")
