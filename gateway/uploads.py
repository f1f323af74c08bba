"""Multipart uploads spooled under the data directory, their text checked as it arrives.

Starlette spools uploaded files in the system temp directory. A route built with
:class:`StagingRoute` parses its multipart body here instead: file parts spool in
this process's staging directory (``<temp_dir>/<host>.p<pid>-<start>``, swept once the
process is gone), and only after the disk there is found to hold the
``watch.min_free_bytes`` floor plus the declared body. A NUL character in a field
name, a field value or a file name (PostgreSQL text cannot hold one) is a 400 as soon
as that part's headers or value are read, before a byte of the file is spooled.
"""

from __future__ import annotations

import codecs
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile

from gateway.context import get_context
from gateway.errors import ApiError, forbid_nul
from pipeline.staging import process_staging_dir

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Files up to this size stay in memory; larger ones roll over to the staging directory.
SPOOL_MAX_BYTES = 1024 * 1024
MAX_FILES = 1
MAX_FIELDS = 64
LOW_DISK_RETRY_AFTER_S = 60


class StagingRoute(APIRoute):
    """An API route whose request parses multipart bodies with :class:`StagedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def staged(request: Request) -> Response:
            return await handler(StagedRequest(request.scope, request.receive))

        return staged


class StagedRequest(Request):
    """A request whose multipart form spools its files in the process's staging directory."""

    async def _get_form(
        self,
        *,
        max_files: int | float = 1000,
        max_fields: int | float = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        content_type, options = parse_options_header(self.headers.get("content-type"))
        if self._form is not None or content_type != b"multipart/form-data":
            return await super()._get_form(
                max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
            )
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(400, "the multipart body has no boundary")
        settings = get_context(self).settings
        directory = process_staging_dir(settings.temp_dir)
        _check_free_space(directory, settings.watch.min_free_bytes + _declared_length(self))
        parser = _StagingParser(
            boundary,
            _charset(options.get(b"charset")),
            directory=directory,
            limits=_Limits(
                int(min(max_files, MAX_FILES)), int(min(max_fields, MAX_FIELDS)), max_part_size
            ),
        )
        self._form = await parser.parse(self.stream())
        return self._form


def _declared_length(request: Request) -> int:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


def _check_free_space(directory: Path, needed: int) -> None:
    """503 while the staging disk holds less than ``needed`` bytes: it is shared with the data."""
    if shutil.disk_usage(directory).free < needed:
        raise ApiError(
            503,
            "low disk space: uploads are refused until space returns",
            kind="low-disk-space",
            headers={"Retry-After": str(LOW_DISK_RETRY_AFTER_S)},
        )


def _charset(raw: bytes | None) -> str:
    if raw is None:
        return "utf-8"
    try:
        return codecs.lookup(raw.decode("latin-1")).name
    except LookupError:
        return "latin-1"


@dataclass(frozen=True, slots=True)
class _Limits:
    files: int
    fields: int
    part_bytes: int


@dataclass(slots=True)
class _Part:
    name: str = ""
    disposition: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    upload: UploadFile | None = None


class _StagingParser:
    """python-multipart's streaming parser, feeding fields to memory and files to disk."""

    def __init__(self, boundary: bytes, charset: str, *, directory: Path, limits: _Limits) -> None:
        self._boundary = boundary
        self._charset = charset
        self._directory = directory
        self._limits = limits
        self._items: list[tuple[str, str | UploadFile]] = []
        self._uploads: list[UploadFile] = []
        self._pending: list[tuple[UploadFile, bytes]] = []
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._fields = 0
        self._ended = False

    async def parse(self, stream: AsyncIterator[bytes]) -> FormData:
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        }
        parser = MultipartParser(self._boundary, callbacks)
        try:
            async for chunk in stream:
                parser.write(chunk)
                await self._write_pending()
            parser.finalize()
            if not self._ended:  # the body stopped before the closing boundary
                raise FormParserError("no closing boundary")
            for upload in self._uploads:
                await upload.seek(0)
        except FormParserError:
            self._discard()
            raise ApiError(400, "the multipart body is malformed") from None
        except BaseException:
            self._discard()
            raise
        return FormData(self._items)

    async def _write_pending(self) -> None:
        # Written here, not in the parser's callbacks: past the spool size a write is
        # file I/O, which UploadFile does off the event loop.
        for upload, data in self._pending:
            await upload.write(data)
        self._pending.clear()

    def _discard(self) -> None:
        for upload in self._uploads:
            upload.file.close()

    def _decode(self, raw: bytes, where: str) -> str:
        try:
            text = raw.decode(self._charset)
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        forbid_nul(text, where)
        return text

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_end(self) -> None:
        self._ended = True

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.lower()
        if name == b"content-disposition":
            self._part.disposition = self._header_value
        self._part.headers.append((name, self._header_value))
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        if b"name" not in options:
            raise ApiError(400, "a multipart part has no name")
        self._part.name = self._decode(options[b"name"], "form field names")
        if b"filename" not in options:
            self._fields += 1
            if self._fields > self._limits.fields:
                raise ApiError(400, f"at most {self._limits.fields} form fields")
            return
        if len(self._uploads) >= self._limits.files:
            raise ApiError(400, f"at most {self._limits.files} file per request")
        filename = self._decode(options[b"filename"], "the file name")
        spool = SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES, dir=str(self._directory))
        upload = UploadFile(
            file=spool,  # type: ignore[arg-type]
            size=0,
            filename=filename,
            headers=Headers(raw=self._part.headers),
        )
        self._uploads.append(upload)
        self._part.upload = upload

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part.upload is not None:
            self._pending.append((self._part.upload, chunk))
            return
        if len(self._part.data) + len(chunk) > self._limits.part_bytes:
            raise ApiError(400, f"a form field is over {self._limits.part_bytes} bytes")
        self._part.data.extend(chunk)

    def _on_part_end(self) -> None:
        part = self._part
        if part.upload is not None:
            self._items.append((part.name, part.upload))
            return
        self._items.append((part.name, self._decode(bytes(part.data), f"form field {part.name!r}")))
