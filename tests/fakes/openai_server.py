"""A fake OpenAI API (Responses, Files, Vector stores, Transcriptions, Models) served over real HTTP."""

from __future__ import annotations

import inspect
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson
from aiohttp import web

from .base import FakeServer, FormPart, json_response, parse_json, parse_multipart

RESPONSES_PATH = "/v1/responses"


# -- scripted steps -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    """Answer with one assistant message (optionally with output_text annotations, e.g. file citations)."""

    text: str
    annotations: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class CallTools:
    """Answer with one function_call item per (name, arguments) pair, after an optional message."""

    calls: Sequence[tuple[str, Mapping[str, Any]]]
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer with an OpenAI error envelope and this HTTP status (plus `retry-after` when given)."""

    status: int
    code: str | None = None
    message: str = "Scripted failure"
    retry_after: float | None = None
    error_type: str | None = None
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Hang:
    """Sleep this long before answering (use more than the client timeout); cut short by `close()`."""

    seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class EmptyReply:
    """A completed response whose output is empty (so `output_text == ""`)."""


@dataclass(frozen=True, slots=True)
class Incomplete:
    """An `incomplete` response (reason max_output_tokens or content_filter) with optional partial text."""

    reason: str = "max_output_tokens"
    text: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A completed response whose message holds a `refusal` content part instead of output_text."""

    text: str = "I'm sorry, I can't help with that."


Step: TypeAlias = Reply | CallTools | Fail | Hang | EmptyReply | Incomplete | Refusal
Responder: TypeAlias = Callable[[dict[str, Any]], Step | Awaitable[Step | None] | None]


# -- recorded state ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class StoredFile:
    """A file uploaded through `POST /v1/files`."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        """The API's file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(slots=True)
class VectorStoreFileState:
    """A file attached to a vector store; `in_progress` until the first GET, then `outcome`."""

    file_id: str
    vector_store_id: str
    created_at: int
    outcome: str
    status: str = "in_progress"
    usage_bytes: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)

    def advance(self) -> None:
        """Finish processing (completed or failed)."""
        self.status = self.outcome

    def to_json(self) -> dict[str, Any]:
        """The API's vector_store.file object."""
        last_error = (
            {"code": "invalid_file", "message": "The file could not be parsed (fake failure)."}
            if self.status == "failed"
            else None
        )
        return {
            "id": self.file_id,
            "object": "vector_store.file",
            "created_at": self.created_at,
            "usage_bytes": self.usage_bytes if self.status == "completed" else 0,
            "vector_store_id": self.vector_store_id,
            "status": self.status,
            "last_error": last_error,
            "attributes": self.attributes,
            "chunking_strategy": {
                "type": "static",
                "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
            },
        }


@dataclass(slots=True)
class StoredVectorStore:
    """A vector store and its attached files."""

    id: str
    name: str
    created_at: int
    metadata: dict[str, Any]
    files: dict[str, VectorStoreFileState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The API's vector_store object."""
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for f in self.files.values():
            counts[f.status] += 1
        return {
            "id": self.id,
            "object": "vector_store",
            "created_at": self.created_at,
            "name": self.name,
            "usage_bytes": sum(f.usage_bytes for f in self.files.values() if f.status == "completed"),
            "file_counts": {**counts, "total": len(self.files)},
            "status": "in_progress" if counts["in_progress"] else "completed",
            "expires_after": None,
            "expires_at": None,
            "last_active_at": self.created_at,
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class TranscriptionCall:
    """One `POST /v1/audio/transcriptions` upload."""

    model: str
    filename: str | None
    content_type: str | None
    content: bytes
    fields: dict[str, str]


# -- helpers ------------------------------------------------------------------------------------------------
def _new_id(prefix: str, nbytes: int = 24) -> str:
    """A random id such as `resp_<hex>`."""
    return f"{prefix}{secrets.token_hex(nbytes)}"


def _default_error_type(status: int) -> str:
    """The `error.type` the real API uses for an HTTP status."""
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    if status == 403:
        return "permission_error"
    return "invalid_request_error"


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style `{"error": {message, type, param, code}}` response."""
    payload = {
        "error": {
            "message": message,
            "type": error_type or _default_error_type(status),
            "param": param,
            "code": code,
        }
    }
    return json_response(payload, status=status, headers=headers)


def _content_text(content: Any) -> str:
    """Text of a message `content` (a string or a list of input_text/output_text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
        )
    return ""


def _input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as a list of item dicts (a string becomes one user message)."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if isinstance(raw, list):
        return [item for item in raw if isinstance(item, dict)]
    return []


def _is_message(item: Mapping[str, Any]) -> bool:
    """Whether an input item is a message (explicit type or the role/content shorthand)."""
    return item.get("type", "message") == "message" and "role" in item


def input_text(body: Mapping[str, Any]) -> str:
    """The user text of a Responses request (user messages joined by newlines)."""
    items = _input_items(body)
    return "\n".join(_content_text(i.get("content")) for i in items if _is_message(i) and i.get("role") == "user")


def function_call_outputs(body: Mapping[str, Any]) -> dict[str, str]:
    """`call_id -> output` for every function_call_output item of a Responses request."""
    outputs: dict[str, str] = {}
    for item in _input_items(body):
        if item.get("type") == "function_call_output":
            output = item.get("output")
            outputs[str(item.get("call_id"))] = output if isinstance(output, str) else _content_text(output)
    return outputs


def _estimate_tokens(text: str) -> int:
    """A rough token count (4 characters per token)."""
    return max(1, len(text) // 4)


class FakeOpenAI(FakeServer):
    """Fake OpenAI API. Script `/v1/responses` with `script`, `responder`, `latency`, `fail_rate`."""

    def __init__(self, *, seed: int = 0) -> None:
        """Empty state; default behaviour echoes the user text."""
        super().__init__(seed=seed)
        self.script: deque[Step] = deque()
        self.responder: Responder | None = None
        self.fail_rate: float = 0.0
        self.expected_api_key: str | None = None
        self.known_models: set[str] | None = None
        # responses
        self.stored: dict[str, dict[str, Any]] = {}
        self.issued: list[dict[str, Any]] = []
        self.http_statuses: list[int] = []
        self.in_flight: int = 0
        self.max_concurrent_seen: int = 0
        self.deleted_responses: list[str] = []
        self._chain_call_ids: dict[str, frozenset[str]] = {}
        # files / vector stores / audio
        self.files: dict[str, StoredFile] = {}
        self.deleted_files: list[str] = []
        self.vector_stores: dict[str, StoredVectorStore] = {}
        self.deleted_vector_stores: list[str] = []
        self.vector_file_fail: bool = False
        self.poll_after_ms: int = 10
        self.transcript: str = "trascrizione di prova"
        self.transcriptions: list[TranscriptionCall] = []

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, for `AsyncOpenAI(base_url=...)`."""
        return f"{self.origin}/v1"

    # -- public helpers ---------------------------------------------------------------------------------------
    def responses_requests(self) -> list[dict[str, Any]]:
        """Parsed JSON bodies of every `POST /v1/responses` received (including rejected ones), in order."""
        return [
            r.json if isinstance(r.json, dict) else (parse_json(r.body) or {})
            for r in self.requests
            if r.method == "POST" and r.path == RESPONSES_PATH
        ]

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `n` `/v1/responses` requests have arrived; returns their bodies."""
        await self.wait_until(lambda: len(self.responses_requests()) >= n, timeout, f"{n} /v1/responses requests")
        return self.responses_requests()

    def last_response_ids(self) -> list[str]:
        """Ids of every successful response issued (stored or not), oldest first."""
        return [r["id"] for r in self.issued]

    def forget(self, response_id: str) -> None:
        """Drop a stored response, as if it had expired (chaining to it then answers 400)."""
        self.stored.pop(response_id, None)
        self._chain_call_ids.pop(response_id, None)

    def forget_all(self) -> None:
        """Drop every stored response."""
        self.stored.clear()
        self._chain_call_ids.clear()

    def default_step(self, body: Mapping[str, Any]) -> Step:
        """The unscripted behaviour: `Echo: <user text>`, or `Done: <outputs>` for tool outputs only."""
        text = input_text(body)
        outputs = function_call_outputs(body)
        if not text and outputs:
            return Reply("Done: " + " | ".join(outputs.values()))
        return Reply(f"Echo: {text}")

    # -- server plumbing ------------------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        """Register the API routes."""
        app.router.add_post("/v1/responses", self._create_response)
        app.router.add_get("/v1/responses/{id}", self._get_response)
        app.router.add_delete("/v1/responses/{id}", self._delete_response)
        app.router.add_post("/v1/files", self._create_file)
        app.router.add_get("/v1/files/{id}", self._get_file)
        app.router.add_delete("/v1/files/{id}", self._delete_file)
        app.router.add_post("/v1/vector_stores", self._create_vector_store)
        app.router.add_get("/v1/vector_stores/{id}", self._get_vector_store)
        app.router.add_delete("/v1/vector_stores/{id}", self._delete_vector_store)
        app.router.add_post("/v1/vector_stores/{id}/files", self._attach_vector_store_file)
        app.router.add_get("/v1/vector_stores/{id}/files/{file_id}", self._get_vector_store_file)
        app.router.add_delete("/v1/vector_stores/{id}/files/{file_id}", self._detach_vector_store_file)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_get("/v1/models/{model}", self._get_model)

    def _check_auth(self, request: web.Request) -> web.StreamResponse | None:
        """401 `invalid_api_key` when `expected_api_key` is set and the bearer differs."""
        if self.expected_api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.expected_api_key}":
            return None
        return openai_error(
            401, "Incorrect API key provided", error_type="invalid_request_error", code="invalid_api_key"
        )

    def _extra_headers(self) -> dict[str, str]:
        """`x-request-id` like the real API."""
        return {"x-request-id": _new_id("req_", 16)}

    # -- /v1/responses ------------------------------------------------------------------------------------------
    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/responses` (tracks concurrency and the HTTP status of each answer)."""
        self.in_flight += 1
        self.max_concurrent_seen = max(self.max_concurrent_seen, self.in_flight)
        try:
            response = await self._answer_responses(request)
        finally:
            self.in_flight -= 1
        self.http_statuses.append(response.status)
        await self.notify()
        return response

    async def _answer_responses(self, request: web.Request) -> web.Response:
        """Validate, pick the step and build the answer."""
        body = parse_json(await request.read())
        if not isinstance(body, dict):
            return openai_error(400, "We could not parse the JSON body of your request.")
        await self.apply_latency()
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        if self.fail_rate > 0 and self.rng.random() < self.fail_rate:
            return self._fail_response(self._random_failure())
        step = await self._next_step(body)
        if isinstance(step, Hang):
            if await self.sleep_unless_closed(step.seconds):
                return openai_error(503, "The server is shutting down (fake).")
            step = self.default_step(body)
        if isinstance(step, Fail):
            return self._fail_response(step)
        return json_response(self._complete(body, step))

    def _validate(self, body: dict[str, Any]) -> web.Response | None:
        """The 400s the real API gives for a missing model, a broken chain or missing tool outputs."""
        if not body.get("model"):
            return openai_error(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        prev_id = body.get("previous_response_id")
        if prev_id is not None and body.get("conversation") is not None:
            return openai_error(
                400,
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                code="mutually_exclusive_parameters",
            )
        provided = function_call_outputs(body)
        known = {str(i.get("call_id")) for i in _input_items(body) if i.get("type") == "function_call"}
        if prev_id is not None:
            previous = self.stored.get(prev_id)
            if previous is None:
                return openai_error(
                    400,
                    f"Previous response with id '{prev_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            known |= self._chain_call_ids.get(prev_id, frozenset())
            for item in previous["output"]:
                if item.get("type") == "function_call" and item["call_id"] not in provided:
                    return openai_error(
                        400, f"No tool output found for function call {item['call_id']}.", param="input"
                    )
        for call_id in provided:
            if call_id not in known:
                return openai_error(
                    400, f"No tool call found for function call output with call_id {call_id}.", param="input"
                )
        return None

    def _random_failure(self) -> Fail:
        """A transient failure for `fail_rate` injection: 429 or 500, equally likely."""
        if self.rng.random() < 0.5:
            return Fail(429, code="rate_limit_exceeded", message="Rate limit reached (injected by fake).")
        return Fail(500, code="server_error", message="The server had an error (injected by fake).")

    async def _next_step(self, body: dict[str, Any]) -> Step:
        """Scripted step first, then the responder hook, then the default echo."""
        if self.script:
            return self.script.popleft()
        if self.responder is not None:
            chosen = self.responder(body)
            if inspect.isawaitable(chosen):
                chosen = await chosen
            if chosen is not None:
                return chosen
        return self.default_step(body)

    def _fail_response(self, fail: Fail) -> web.Response:
        """The HTTP answer of a Fail step."""
        headers = {"retry-after": f"{fail.retry_after:g}"} if fail.retry_after is not None else None
        return openai_error(
            fail.status,
            fail.message,
            error_type=fail.error_type,
            param=fail.param,
            code=fail.code,
            headers=headers,
        )

    def _complete(self, body: dict[str, Any], step: Step) -> dict[str, Any]:
        """Build (and store, unless `store` is false) the response object of a successful step."""
        status = "completed"
        incomplete_details: dict[str, Any] | None = None
        output: list[dict[str, Any]] = []
        if isinstance(step, Reply):
            output.append(self._message_item(step.text, step.annotations))
        elif isinstance(step, CallTools):
            if step.text is not None:
                output.append(self._message_item(step.text, ()))
            for name, arguments in step.calls:
                output.append(
                    {
                        "type": "function_call",
                        "id": _new_id("fc_"),
                        "call_id": _new_id("call_", 12),
                        "name": name,
                        "arguments": orjson.dumps(dict(arguments)).decode(),
                        "status": "completed",
                    }
                )
        elif isinstance(step, Incomplete):
            status = "incomplete"
            incomplete_details = {"reason": step.reason}
            if step.text:
                output.append(self._message_item(step.text, (), status="incomplete"))
        elif isinstance(step, Refusal):
            output.append(
                {
                    "type": "message",
                    "id": _new_id("msg_"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": step.text}],
                }
            )
        response_id = _new_id("resp_")
        now = int(time.time())
        out_text = "".join(
            str(p.get("text", "")) for i in output if i["type"] == "message" for p in i["content"]
        ) + "".join(str(i.get("arguments", "")) for i in output)
        in_tokens = _estimate_tokens(orjson.dumps(body.get("input")).decode() + str(body.get("instructions")))
        out_tokens = _estimate_tokens(out_text)
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": now,
            "completed_at": now if status == "completed" else None,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete_details,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": in_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": out_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": in_tokens + out_tokens,
            },
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        self.issued.append(response)
        if body.get("store", True) is not False:
            self.stored[response_id] = response
            prev_ids = self._chain_call_ids.get(str(body.get("previous_response_id")), frozenset())
            here = {str(i.get("call_id")) for i in _input_items(body) if i.get("type") == "function_call"}
            here |= {i["call_id"] for i in output if i["type"] == "function_call"}
            self._chain_call_ids[response_id] = prev_ids | here
        return response

    @staticmethod
    def _message_item(text: str, annotations: Sequence[Mapping[str, Any]], status: str = "completed") -> dict[str, Any]:
        """An assistant `message` output item with one output_text part."""
        return {
            "type": "message",
            "id": _new_id("msg_"),
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [dict(a) for a in annotations]}],
        }

    async def _get_response(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/responses/{id}`."""
        response = self.stored.get(request.match_info["id"])
        if response is None:
            return self._not_found("Response", request.match_info["id"])
        return json_response(response)

    async def _delete_response(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /v1/responses/{id}`: the response can no longer be chained to."""
        response_id = request.match_info["id"]
        if response_id not in self.stored:
            return self._not_found("Response", response_id)
        self.forget(response_id)
        self.deleted_responses.append(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})

    @staticmethod
    def _not_found(kind: str, object_id: str) -> web.Response:
        """A 404 error envelope."""
        return openai_error(404, f"No such {kind} object: {object_id}", param="id")

    # -- files -----------------------------------------------------------------------------------------------------
    async def _form(self, request: web.Request) -> dict[str, FormPart]:
        """The multipart parts of the request."""
        return parse_multipart(request.headers.get("Content-Type", ""), await request.read())

    async def _create_file(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/files` (multipart: file, purpose)."""
        form = await self._form(request)
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or upload.filename is None:
            return openai_error(400, "Missing required parameter: 'file'.", param="file")
        if purpose is None or not purpose.text:
            return openai_error(400, "Missing required parameter: 'purpose'.", param="purpose")
        stored = StoredFile(_new_id("file-", 11), upload.filename, purpose.text, upload.data, int(time.time()))
        self.files[stored.id] = stored
        await self.notify()
        return json_response(stored.to_json())

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/files/{id}`."""
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return self._not_found("File", request.match_info["id"])
        return json_response(stored.to_json())

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /v1/files/{id}`."""
        file_id = request.match_info["id"]
        if self.files.pop(file_id, None) is None:
            return self._not_found("File", file_id)
        self.deleted_files.append(file_id)
        await self.notify()
        return json_response({"id": file_id, "object": "file", "deleted": True})

    # -- vector stores ---------------------------------------------------------------------------------------------
    def _poll_headers(self) -> dict[str, str]:
        """Poll hint honoured by the SDK's `*_and_poll` helpers (keeps tests fast)."""
        return {"openai-poll-after-ms": str(self.poll_after_ms)}

    def _attach(self, store: StoredVectorStore, file_id: str, attributes: dict[str, Any]) -> VectorStoreFileState:
        """Attach an uploaded file to a store (its fate is decided now by `vector_file_fail`)."""
        state = VectorStoreFileState(
            file_id=file_id,
            vector_store_id=store.id,
            created_at=int(time.time()),
            outcome="failed" if self.vector_file_fail else "completed",
            usage_bytes=len(self.files[file_id].content),
            attributes=attributes,
        )
        store.files[file_id] = state
        return state

    def _store_or_404(self, request: web.Request) -> StoredVectorStore | web.Response:
        """The vector store named in the path, or a 404 response."""
        store_id = request.match_info["id"]
        store = self.vector_stores.get(store_id)
        return store if store is not None else self._not_found("vector store", store_id)

    async def _create_vector_store(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/vector_stores` (name, file_ids, metadata)."""
        body = parse_json(await request.read())
        if not isinstance(body, dict):
            return openai_error(400, "We could not parse the JSON body of your request.")
        file_ids = body.get("file_ids") or []
        for file_id in file_ids:
            if file_id not in self.files:
                return openai_error(400, f"File {file_id} not found.", param="file_ids")
        store = StoredVectorStore(
            id=_new_id("vs_", 12),
            name=str(body.get("name") or ""),
            created_at=int(time.time()),
            metadata=dict(body.get("metadata") or {}),
        )
        for file_id in file_ids:
            self._attach(store, file_id, {})
        self.vector_stores[store.id] = store
        await self.notify()
        return json_response(store.to_json(), headers=self._poll_headers())

    async def _get_vector_store(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/vector_stores/{id}` (finishes processing of its files)."""
        store = self._store_or_404(request)
        if isinstance(store, web.Response):
            return store
        for state in store.files.values():
            state.advance()
        return json_response(store.to_json(), headers=self._poll_headers())

    async def _delete_vector_store(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /v1/vector_stores/{id}`."""
        store = self._store_or_404(request)
        if isinstance(store, web.Response):
            return store
        del self.vector_stores[store.id]
        self.deleted_vector_stores.append(store.id)
        await self.notify()
        return json_response({"id": store.id, "object": "vector_store.deleted", "deleted": True})

    async def _attach_vector_store_file(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/vector_stores/{id}/files` (file_id, attributes)."""
        store = self._store_or_404(request)
        if isinstance(store, web.Response):
            return store
        body = parse_json(await request.read())
        file_id = body.get("file_id") if isinstance(body, dict) else None
        if not isinstance(file_id, str) or not file_id:
            return openai_error(400, "Missing required parameter: 'file_id'.", param="file_id")
        if file_id not in self.files:
            return openai_error(404, f"No file found with id '{file_id}'.", param="file_id")
        attributes = body.get("attributes") if isinstance(body, dict) else None
        state = self._attach(store, file_id, dict(attributes or {}))
        await self.notify()
        return json_response(state.to_json(), headers=self._poll_headers())

    async def _get_vector_store_file(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/vector_stores/{id}/files/{file_id}`: in_progress becomes completed/failed here."""
        store = self._store_or_404(request)
        if isinstance(store, web.Response):
            return store
        state = store.files.get(request.match_info["file_id"])
        if state is None:
            return self._not_found("vector store file", request.match_info["file_id"])
        state.advance()
        return json_response(state.to_json(), headers=self._poll_headers())

    async def _detach_vector_store_file(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /v1/vector_stores/{id}/files/{file_id}`."""
        store = self._store_or_404(request)
        if isinstance(store, web.Response):
            return store
        file_id = request.match_info["file_id"]
        if store.files.pop(file_id, None) is None:
            return self._not_found("vector store file", file_id)
        return json_response({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})

    # -- audio / models --------------------------------------------------------------------------------------------
    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/audio/transcriptions` (multipart: file, model): answers `{"text": transcript}`."""
        await self.apply_latency()
        form = await self._form(request)
        upload, model = form.get("file"), form.get("model")
        if upload is None:
            return openai_error(400, "Missing required parameter: 'file'.", param="file")
        if model is None or not model.text:
            return openai_error(400, "Missing required parameter: 'model'.", param="model")
        fields = {name: part.text for name, part in form.items() if name != "file"}
        self.transcriptions.append(
            TranscriptionCall(model.text, upload.filename, upload.content_type, upload.data, fields)
        )
        await self.notify()
        if fields.get("response_format") in ("text", "srt", "vtt"):
            return web.Response(text=self.transcript, content_type="text/plain")
        return json_response({"text": self.transcript})

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models/{model}` (404 `model_not_found` when `known_models` is set and lacks it)."""
        model = request.match_info["model"]
        if self.known_models is not None and model not in self.known_models:
            return openai_error(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return json_response({"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "openai"})
