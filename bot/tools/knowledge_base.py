"""Built-in tool: search the shop's PDF knowledge base when it is indexed locally (local mode)."""

from __future__ import annotations

from typing import Any

from bot.ai.knowledge import MAX_SEARCH_RESULTS, fts_query
from bot.tools.core import ToolContext, ToolError, tool


@tool
async def search_knowledge_base(ctx: ToolContext, query: str) -> dict[str, Any]:
    """Search the shop's own document (catalogue, price list, policies, opening hours) uploaded as a PDF.

    Use it for questions the product catalogue cannot answer, such as shipping, returns or how
    something works. Answer only from the passages returned.

    Args:
        query: a few key words of the question, e.g. "spedizione estero" or "return policy".
    """
    settings = await ctx.repos.assistant.get()
    doc = await ctx.repos.knowledge.get()
    # With the OpenAI vector store the model gets file_search instead; this tool is for local mode.
    if not settings.kb_enabled or settings.kb_mode != "local" or doc is None or doc.mode != "local":
        return {"results": [], "note": "The shop has no searchable document right now. Do not mention it."}
    if doc.status != "ready":
        return {"results": [], "note": "The shop's document is still being prepared. Answer without it."}
    match = fts_query(query)
    if not match:
        raise ToolError("write a few words to look for")
    hits = await ctx.repos.knowledge.search(match, MAX_SEARCH_RESULTS)
    results = [{"page": hit.page, "text": hit.text} for hit in hits]
    out: dict[str, Any] = {"query": query, "document": doc.filename, "results": results}
    if not results:
        out["note"] = "Nothing in the document matches. Try other words, or say you do not know."
    return out
