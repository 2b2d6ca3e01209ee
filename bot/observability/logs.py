"""structlog set-up, done once: JSON lines off a TTY, the readable console renderer on one.

After structlog's docs/performance.md: orjson renders straight to bytes and `BytesLoggerFactory`
writes them without a decode/encode round trip (a turn logs two lines, and under load the log was
a visible share of the main thread). Lines from the standard library's loggers (aiohttp, asyncio,
aiosqlite) go through the same processors, so the JSON stream stays JSON.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,  # first, so per-turn ids land on every line
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """Configure structlog, and route the stdlib root logger through the same rendering."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    if use_json:
        structlog.configure(
            processors=[*_SHARED, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                        structlog.processors.JSONRenderer(serializer=orjson.dumps)],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
        stdlib_renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(
            serializer=lambda obj, **_: orjson.dumps(obj).decode())
    else:
        structlog.configure(
            processors=[*_SHARED, structlog.processors.StackInfoRenderer(), structlog.dev.ConsoleRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
        stdlib_renderer = structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, stdlib_renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
