"""structlog set-up: key/value events, human-readable or JSON, on stderr."""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Look ``sys.stderr`` up when logging, not when configuring (it may be replaced)."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(*, fmt: str = "console", level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Third-party loggers (pgserver, psycopg_pool) speak through the standard library.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
