"""Fake OpenAI and WhatsApp Graph servers (real HTTP on 127.0.0.1) plus Meta webhook builders for tests."""

from .base import FakeServer, FormPart, RecordedRequest
from .graph_server import FakeGraph, GraphFailure
from .openai_server import (
    CallTools,
    EmptyReply,
    Fail,
    FakeOpenAI,
    Hang,
    Incomplete,
    Refusal,
    Reply,
    Responder,
    Step,
    StoredFile,
    StoredVectorStore,
    TranscriptionCall,
    VectorStoreFileState,
)

__all__ = [
    "CallTools",
    "EmptyReply",
    "Fail",
    "FakeGraph",
    "FakeOpenAI",
    "FakeServer",
    "FormPart",
    "GraphFailure",
    "Hang",
    "Incomplete",
    "RecordedRequest",
    "Refusal",
    "Reply",
    "Responder",
    "Step",
    "StoredFile",
    "StoredVectorStore",
    "TranscriptionCall",
    "VectorStoreFileState",
]
