"""The knowledge base's stored state, shared by the AI side and the storage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KnowledgeDoc:
    """The current PDF and its index, as stored."""

    filename: str
    stored_name: str
    size: int
    pages: int
    sha256: str
    mode: str
    status: str  # processing | ready | failed
    error: str | None
    openai_file_id: str | None
    vector_store_id: str | None
    uploaded_at: float
    indexed_at: float | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One page of the PDF that matches a local search."""

    page: int
    text: str
