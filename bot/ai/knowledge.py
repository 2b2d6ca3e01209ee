"""The PDF knowledge base: check the PDF, index it (OpenAI vector store or local full-text), report status.

Indexing runs in the background, in a task this service owns; `close()` cancels and awaits it.
An interrupted run (shutdown, crash) is picked up again by `resume()` at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import openai
import structlog
from pypdf import PdfReader
from pypdf.errors import LimitReachedError, PyPdfError

from bot.ai.engine import AISettings, ClientLease, classify
from bot.domain.knowledge import KnowledgeDoc, SearchHit

log = structlog.get_logger("bot.knowledge")

MAX_PDF_BYTES = 50 * 1024 * 1024
MODES = ("openai", "local")
INDEX_JOB = "knowledge-index"  # the cluster-wide job lock's name
# Fewer readable characters than this in the whole file means a scan or an empty document.
MIN_TEXT_CHARS = 20
MAX_SEARCH_RESULTS = 5


class KnowledgeError(Exception):
    """A PDF cannot be used; the message tells a shop owner what to do instead."""


@dataclass(frozen=True, slots=True)
class PdfText:
    """The readable text of a checked PDF, one string per page."""

    pages: list[str]


class KnowledgeStore(Protocol):
    """Where the knowledge base keeps its state (the persistence layer implements it)."""

    async def get(self) -> KnowledgeDoc | None:
        """The current document, if any."""
        ...

    async def put(self, doc: KnowledgeDoc) -> None:
        """Create or replace the current document's row."""
        ...

    async def set_pages(self, pages: Sequence[str]) -> None:
        """Replace the local full-text index with these pages."""
        ...

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        """Full-text search of the local index."""
        ...


def read_pdf(path: Path) -> PdfText:
    """Check a PDF and extract its text (blocking: run it in a thread). Raises KnowledgeError."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise KnowledgeError(
                "This PDF is password-protected or encrypted, so it cannot be read. Save a copy without "
                "protection (for example with “Print to PDF”) and upload that."
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except KnowledgeError:
        raise
    except (LimitReachedError, MemoryError) as exc:
        # pypdf stops unpacking past its limits: a few hundred KB can expand to gigabytes (a "Flate bomb").
        log.info("knowledge_pdf_too_big_unpacked", error=f"{type(exc).__name__}: {exc}")
        raise KnowledgeError(
            "This PDF holds far more data than its size suggests, more than the server will unpack: it may "
            "be damaged or made to overload servers. Export it again from the original program (or use "
            "“Print to PDF”) and upload the new file."
        ) from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, IndexError, RecursionError,
            AssertionError, ZeroDivisionError, UnicodeError, OverflowError) as exc:
        # pypdf raises a wide range of errors on broken files; every one of them means the same thing here.
        log.info("knowledge_pdf_unreadable", error=f"{type(exc).__name__}: {exc}")
        raise KnowledgeError(
            "This file is not a readable PDF: it may be damaged, incomplete or not a PDF at all. "
            "Export it again from the original program and upload the new file."
        ) from exc
    if not pages:
        raise KnowledgeError("This PDF has no pages. Upload a PDF with your product or shop information.")
    if sum(len(text.strip()) for text in pages) < MIN_TEXT_CHARS:
        raise KnowledgeError(
            "This PDF has no text the assistant can read (it may be scanned pictures of pages). "
            "Upload a PDF with selectable text, or run it through text recognition (OCR) first."
        )
    return PdfText(pages=pages)


def file_search_tools(doc: KnowledgeDoc | None, *, enabled: bool) -> tuple[dict[str, Any], ...]:
    """The file_search tool every model call carries while the OpenAI knowledge base is on and ready."""
    if not enabled or doc is None or doc.mode != "openai" or doc.status != "ready" or not doc.vector_store_id:
        return ()
    return ({"type": "file_search", "vector_store_ids": [doc.vector_store_id],
             "max_num_results": MAX_SEARCH_RESULTS},)


def fts_query(text: str) -> str:
    """Turn free text into a safe FTS5 query: each word quoted, any word may match."""
    words = ["".join(ch for ch in word if ch.isalnum()) for word in text.split()]
    return " OR ".join(f'"{word}"' for word in words if word)


class KnowledgeBase:
    """Owns the PDF file in data/kb/, the indexing task, and the OpenAI file and vector store."""

    def __init__(
        self,
        *,
        store: KnowledgeStore,
        folder: Path,
        client: ClientLease,
        ai_settings: Callable[[], Awaitable[AISettings]],
        on_change: Callable[[], None] = lambda: None,
        on_failure: Callable[[str], Awaitable[None]] | None = None,
        poll_interval_ms: int = 1000,
        max_wait_seconds: float = 900.0,
        exclusive: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self._store = store
        self.folder = folder
        self._client = client
        self._ai_settings = ai_settings
        self._on_change = on_change
        self._on_failure = on_failure  # records the failure for /ai-diagnostics (kb_failed)
        self._poll_interval_ms = poll_interval_ms
        self._max_wait = max_wait_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._current: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # With several processes: the indexing runs in one of them at a time (bot/cluster/ownership.py).
        self._exclusive = exclusive

    # Life cycle

    async def resume(self) -> None:
        """At start-up: finish an indexing run that a shutdown or crash interrupted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        doc = await self._store.get()
        if doc is not None and doc.status == "processing":
            log.info("knowledge_indexing_resumed", filename=doc.filename, mode=doc.mode)
            await self._start()

    async def close(self) -> None:
        """Cancel and await the indexing task (the next start resumes it)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def idle(self) -> None:
        """Wait until no indexing is running (tests and graceful callers use this)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def busy(self) -> bool:
        """True while an indexing run is under way."""
        return bool(self._tasks)

    # Operations

    def new_upload_path(self) -> Path:
        """A private temporary path in data/kb/ for an upload in progress."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        return self.folder / f"upload-{secrets.token_hex(8)}.part"

    async def replace(self, *, filename: str, upload: Path, mode: str) -> KnowledgeDoc:
        """Check an uploaded PDF, make it the knowledge base, and start indexing it. Raises KnowledgeError."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        try:
            text = await asyncio.to_thread(read_pdf, upload)
            digest = await asyncio.to_thread(_sha256, upload)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(upload)
            raise
        async with self._lock:
            await self._cancel_current()
            old = await self._store.get()
            stored_name = f"kb-{digest[:16]}.pdf"
            os.replace(upload, self.folder / stored_name)
            os.chmod(self.folder / stored_name, 0o600)
            if old is not None and old.stored_name != stored_name:
                (self.folder / old.stored_name).unlink(missing_ok=True)
            # The old OpenAI ids stay on the row until the indexing run has deleted them, so a crash
            # in between cannot leave them orphaned at OpenAI.
            doc = KnowledgeDoc(
                filename=_display_name(filename),
                stored_name=stored_name,
                size=(self.folder / stored_name).stat().st_size,
                pages=len(text.pages),
                sha256=digest,
                mode=mode,
                status="processing",
                error=None,
                openai_file_id=old.openai_file_id if old else None,
                vector_store_id=old.vector_store_id if old else None,
                uploaded_at=time.time(),
                indexed_at=None,
            )
            await self._store.put(doc)
            self._on_change()
            await self._start()
        log.info("knowledge_uploaded", filename=doc.filename, pages=doc.pages, size=doc.size, mode=mode)
        return doc

    async def reindex(self, mode: str) -> bool:
        """Index the current PDF again in another mode; False when there is no PDF or nothing changes."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        async with self._lock:
            doc = await self._store.get()
            if doc is None or (doc.mode == mode and doc.status != "failed"):
                return False
            await self._cancel_current()
            await self._store.put(replace(doc, mode=mode, status="processing", error=None, indexed_at=None))
            self._on_change()
            await self._start()
        return True

    async def status(self) -> KnowledgeDoc | None:
        """The current document and its indexing status."""
        return await self._store.get()

    async def search(self, query: str, limit: int = MAX_SEARCH_RESULTS) -> list[SearchHit]:
        """Search the local index (local mode)."""
        match = fts_query(query)
        if not match:
            return []
        return await self._store.search(match, limit)

    # Indexing

    async def _cancel_current(self) -> None:
        task, self._current = self._current, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start(self) -> None:
        task = asyncio.create_task(self._index(), name="knowledge-index")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._current = task

    async def _index(self) -> None:
        if self._exclusive is None:
            await self._index_current()
            return
        async with self._exclusive(INDEX_JOB):
            doc = await self._store.get()
            # Another process may have finished it while we waited for the job's lock.
            if doc is None or doc.status != "processing":
                return
            if not (self.folder / doc.stored_name).exists():
                # Uploaded to another process whose data directory is not shared: that one indexes it.
                log.info("knowledge_file_elsewhere", filename=doc.filename)
                return
            await self._index_current()

    async def _index_current(self) -> None:
        doc = await self._store.get()
        if doc is None:
            return
        started = doc
        try:
            settings = await self._ai_settings()
            await self._drop_openai(doc, settings)
            doc = replace(doc, openai_file_id=None, vector_store_id=None)
            await self._store.put(doc)
            if doc.mode == "local":
                text = await asyncio.to_thread(read_pdf, self.folder / doc.stored_name)
                await self._store.set_pages(text.pages)
                doc = replace(doc, status="ready", indexed_at=time.time())
            else:
                await self._store.set_pages([])
                doc = await self._index_openai(doc, settings)
        except asyncio.CancelledError:
            raise
        except KnowledgeError as exc:
            doc = replace(doc, status="failed", error=str(exc))
        except Exception as exc:
            log.exception("knowledge_indexing_crashed")
            doc = replace(doc, status="failed", error=f"Indexing stopped unexpectedly: {type(exc).__name__}: {exc}")
        now = await self._store.get()
        if now is not None and (now.sha256, now.uploaded_at) != (started.sha256, started.uploaded_at):
            log.info("knowledge_indexing_outdated", filename=doc.filename)  # a newer upload replaced it meanwhile
            return
        await self._store.put(doc)
        self._on_change()
        log.info("knowledge_indexed", filename=doc.filename, mode=doc.mode, status=doc.status, error=doc.error)
        if doc.status == "failed" and self._on_failure is not None:
            await self._on_failure(f"{doc.filename}: {doc.error}")

    async def _index_openai(self, doc: KnowledgeDoc, settings: AISettings) -> KnowledgeDoc:
        if not settings.api_key:
            raise KnowledgeError("No OpenAI API key is set, so the PDF cannot be sent to OpenAI. Enter the key "
                                 "on this page (or choose the local mode) and upload the PDF again.")
        async with self._client(settings) as client:
            return await self._upload_and_index(client, doc, settings)

    async def _upload_and_index(self, client: openai.AsyncOpenAI, doc: KnowledgeDoc,
                                settings: AISettings) -> KnowledgeDoc:
        try:
            uploaded = await client.files.create(
                file=(doc.filename, self.folder / doc.stored_name, "application/pdf"), purpose="assistants"
            )
            # Record each id as soon as it exists, so whatever happens next can clean it up.
            doc = replace(doc, openai_file_id=uploaded.id)
            await self._store.put(doc)
            store = await client.vector_stores.create(name=f"Knowledge base: {doc.filename}"[:200])
            doc = replace(doc, vector_store_id=store.id)
            await self._store.put(doc)
            attached = await client.vector_stores.files.create_and_poll(
                vector_store_id=store.id, file_id=uploaded.id,
                poll_interval_ms=self._poll_interval_ms, max_wait_seconds=self._max_wait,
            )
        except TimeoutError:
            await self._drop_openai(doc, settings)
            return replace(doc, openai_file_id=None, vector_store_id=None, status="failed",
                           error="OpenAI took too long to read the PDF. Try again later, or upload a smaller file.")
        except openai.OpenAIError as exc:
            await self._drop_openai(doc, settings)
            reason = classify(exc)
            return replace(doc, openai_file_id=None, vector_store_id=None, status="failed",
                           error=f"OpenAI could not index the PDF: {reason}.")
        if attached.status != "completed":
            last = attached.last_error
            why = f"{last.message} ({last.code})" if last is not None else f"status {attached.status}"
            await self._drop_openai(doc, settings)
            return replace(doc, openai_file_id=None, vector_store_id=None, status="failed",
                           error=f"OpenAI could not index the PDF: {why}. Check the file, then upload it again.")
        return replace(doc, status="ready", error=None, indexed_at=time.time())

    async def _drop_openai(self, doc: KnowledgeDoc, settings: AISettings) -> None:
        """Delete a vector store and file at OpenAI (best effort: a missing one is already gone)."""
        if not (doc.vector_store_id or doc.openai_file_id) or not settings.api_key:
            return
        async with self._client(settings) as client:
            if doc.vector_store_id:
                try:
                    await client.vector_stores.delete(doc.vector_store_id)
                except openai.OpenAIError as exc:
                    log.warning("knowledge_store_delete_failed", vector_store_id=doc.vector_store_id,
                                error=str(exc))
            if doc.openai_file_id:
                try:
                    await client.files.delete(doc.openai_file_id)
                except openai.OpenAIError as exc:
                    log.warning("knowledge_file_delete_failed", file_id=doc.openai_file_id, error=str(exc))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _display_name(filename: str) -> str:
    """The name a person uploaded, without any folder part and within a sane length."""
    # Some clients percent-encode the multipart filename (aiohttp does; browsers send it as is).
    name = unquote(filename).replace("\\", "/").rsplit("/", 1)[-1].strip() or "knowledge.pdf"
    return "".join(ch for ch in name if ch.isprintable())[:200]
