"""Object store on S3 or MinIO, through the ``minio`` SDK.

Every call goes through one urllib3 pool with connect/read timeouts and a small
retry budget, so no request can hang forever. Errors from minio, urllib3 and the
socket layer are translated into the ai2text tree here and nowhere else.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, NoReturn, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object as MinioObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from pipeline.config import StorageSettings
from pipeline.errors import PermanentError, StorageUnavailable, TransientError
from pipeline.storage.base import ObjectInfo, ObjectNotFound, check_key

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3 refuses multipart parts smaller than this (except the last one)."""

_RETRY_STATUSES = (500, 502, 503, 504)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_READ_ACTIONS = frozenset({"download", "stat", "delete"})
_TRANSIENT_CODES = frozenset(
    {
        "AccessDenied",  # store-level configuration; retrying after a fix can succeed
        "InternalError",
        "InvalidAccessKeyId",
        "NoSuchBucket",  # only reached on writes; the next put recreates it
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SignatureDoesNotMatch",
        "SlowDown",
    }
)


class _ShortSource(Exception):
    """The caller's stream ended before the promised size."""


class _ExactReader:
    """Reads exactly ``size`` bytes from ``stream``; raises if it ends early."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._left = size
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want == 0:
            return b""
        chunk = self._stream.read(want)
        if not chunk:
            raise _ShortSource
        self._left -= len(chunk)
        self.consumed += len(chunk)
        return bytes(chunk)


class S3Store:
    """Bytes by key in one S3 bucket. Safe to share between threads."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        chunk_bytes: int = 8 * 1024 * 1024,
        region: str | None = None,
        endpoint: str = "",
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.chunk_bytes = chunk_bytes
        self.part_size = max(MIN_PART_SIZE, -(-chunk_bytes // MIN_PART_SIZE) * MIN_PART_SIZE)
        self.region = region
        self.endpoint = endpoint
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_settings(cls, s: StorageSettings) -> S3Store:
        """Build a store from settings; does not contact the server."""
        if not s.endpoint:
            raise ValueError("storage.endpoint is required for the S3 store")
        endpoint, secure = _split_endpoint(s.endpoint, s.secure)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=s.timeout_s, read=s.timeout_s),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=3,
                backoff_factor=0.2,
                status_forcelist=_RETRY_STATUSES,
                respect_retry_after_header=False,
            ),
        )
        client = Minio(
            endpoint,
            access_key=s.access_key.get_secret_value() if s.access_key else None,
            secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
            secure=secure,
            region=s.region,
            http_client=http,
        )
        return cls(client, s.bucket, chunk_bytes=s.chunk_bytes, region=s.region, endpoint=endpoint)

    def _check_key(self, key: str) -> str:
        """Our own keys follow the strict store format (see ``check_key``)."""
        return check_key(key)

    # -- bucket ---------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (once per store)."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if not self._bucket_ready:
                self._create_bucket_if_missing()

    def _create_bucket_if_missing(self) -> None:
        with self._translate("open bucket", None):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket, location=self.region)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

    # -- ObjectStore ----------------------------------------------------------

    def put_stream(
        self, key: str, stream: BinaryIO, size: int, content_type: str | None = None
    ) -> ObjectInfo:
        """Upload exactly ``size`` bytes; multipart in ``part_size`` pieces when large."""
        self._check_key(key)
        self.ensure_bucket()
        reader = _ExactReader(stream, size)
        try:
            with self._translate("store", key):
                result = self.client.put_object(
                    self.bucket,
                    key,
                    cast(BinaryIO, reader),  # minio only calls read()
                    length=size,
                    content_type=content_type or "application/octet-stream",
                    part_size=self.part_size,
                    # Sequential parts: memory stays at one part, and a failed
                    # upload leaves no worker threads behind.
                    num_parallel_uploads=1,
                )
        except _ShortSource:
            raise TransientError(
                f"source ended after {reader.consumed} of {size} bytes while storing {key}"
            ) from None
        return ObjectInfo(key=key, size=size, etag=clean_etag(result.etag))

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        """Store a small document."""
        return self.put_stream(key, io.BytesIO(data), len(data), content_type)

    def download(self, key: str, dest: BinaryIO, *, etag: str | None = None) -> int:
        """Stream the object into ``dest``; pinned to ``etag`` when given."""
        self._check_key(key)
        headers: DictType | None = {"If-Match": f'"{clean_etag(etag)}"'} if etag else None
        total = 0
        with self._translate("download", key):
            response = self.client.get_object(self.bucket, key, request_headers=headers)
            try:
                for chunk in response.stream(self.chunk_bytes, decode_content=False):
                    dest.write(chunk)
                    total += len(chunk)
            finally:
                response.close()
                response.release_conn()
        return total

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        """One ranged GET, streamed in ``chunk_bytes`` pieces."""
        self._check_key(key)
        if length <= 0:
            return
        with self._translate("download", key):
            response = self.client.get_object(self.bucket, key, offset=start, length=length)
            try:
                yield from response.stream(self.chunk_bytes, decode_content=False)
            finally:
                response.close()
                response.release_conn()

    def get_bytes(self, key: str) -> bytes:
        """Read a small document."""
        buf = io.BytesIO()
        self.download(key, buf)
        return buf.getvalue()

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and etag, or ``None`` if the object (or bucket) does not exist."""
        obj = self._stat_object(key)
        if obj is None:
            return None
        return ObjectInfo(key=key, size=obj.size or 0, etag=clean_etag(obj.etag))

    def _stat_object(self, key: str) -> MinioObject | None:
        self._check_key(key)
        try:
            with self._translate("stat", key):
                return self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return None

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        self._check_key(key)
        try:
            with self._translate("delete", key):
                self.client.remove_object(self.bucket, key)
        except ObjectNotFound:
            return

    def uri(self, key: str) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self._check_key(key)}"

    def check(self) -> None:
        """Raise ``TransientError`` unless the endpoint answers; creates a missing bucket."""
        self._create_bucket_if_missing()

    # -- errors ---------------------------------------------------------------

    @contextmanager
    def _translate(self, action: str, key: str | None) -> Iterator[None]:
        """Turn minio/urllib3/socket exceptions into the ai2text tree."""
        try:
            yield
        except (MinioException, Urllib3HTTPError, OSError) as exc:
            self._raise_translated(exc, action, key)

    def _raise_translated(
        self, exc: MinioException | Urllib3HTTPError | OSError, action: str, key: str | None
    ) -> NoReturn:
        what = f"{action} {key}" if key else action
        where = f"s3://{self.bucket} at {self.endpoint}" if self.endpoint else f"s3://{self.bucket}"
        status = _status_of(exc)
        code = exc.code if isinstance(exc, S3Error) else None
        if status == 412 or code == "PreconditionFailed":
            raise PermanentError(f"object {key} changed since it was ingested") from exc
        if code == "NoSuchBucket":
            self._bucket_ready = False  # deleted behind our back: recreate on the next put
            if action == "download":
                # A missing bucket is a configuration or outage problem, not a missing object:
                # jobs must wait for it to be fixed, not die.
                raise StorageUnavailable(
                    f"cannot {what}: bucket {self.bucket} does not exist"
                ) from exc
        if action in _READ_ACTIONS and (code in _MISSING_CODES or status == 404):
            raise ObjectNotFound(f"object not found: {key}") from exc
        if isinstance(exc, S3Error):
            reason = f"{code}: {exc.message}" if exc.message else str(code)
            if status is not None and status >= 500:
                raise StorageUnavailable(f"cannot {what} in {where}: {reason}") from exc
            if code in _TRANSIENT_CODES:
                raise TransientError(f"cannot {what} in {where}: {reason}") from exc
            raise PermanentError(f"cannot {what} in {where}: {reason}") from exc
        if isinstance(exc, ServerError | InvalidResponseError):
            raise StorageUnavailable(f"cannot {what} in {where}: HTTP {status}") from exc
        reason = _reason(exc)
        raise StorageUnavailable(f"cannot {what} in {where}: {reason}") from exc


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``http(s)://host:port`` or ``host:port`` → ``(host:port, secure)``."""
    endpoint = endpoint.strip()
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported storage endpoint scheme: {endpoint!r}")
        if parts.path.strip("/"):
            raise ValueError(f"storage endpoint must not have a path: {endpoint!r}")
        return parts.netloc, parts.scheme == "https"
    return endpoint.rstrip("/"), secure


def clean_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, S3Error):
        return int(exc.response.status)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        code = getattr(exc, "_code", None)
        return code if isinstance(code, int) else None
    return None


def _reason(exc: BaseException) -> str:
    """A short human message for a network-level failure."""
    inner: BaseException = exc
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        inner = reason
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, so test it first.
    if isinstance(inner, urllib3.exceptions.NewConnectionError | ConnectionError):
        return "connection refused or unreachable"
    if isinstance(inner, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timed out"
    text = str(inner) or type(inner).__name__
    return text if len(text) <= 300 else text[:300] + "…"
