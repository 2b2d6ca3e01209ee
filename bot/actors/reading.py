"""What a turn's messages mean together, before anyone answers them: edits, deletions, notices and choices.

Pure: the conversation's actor gives the turn's messages (and the choices it offered last), gets
back what to answer, with the texts as the model should read them, and what to record instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.domain.choices import Choice, match_choice
from bot.domain.conversation import (
    ChoiceReply,
    Edit,
    FlowReply,
    MessageDetail,
    Order,
    Revoke,
    StoredInbound,
    SystemNotice,
)


@dataclass(slots=True)
class Prepared:
    """A turn's messages, sorted out."""

    answer: list[StoredInbound] = field(default_factory=list)  # in order, texts as the model reads them
    closed: list[tuple[int, str, str]] = field(default_factory=list)  # (inbox id, status, why): not answered
    revoked: list[str] = field(default_factory=list)  # wamids the customer deleted
    notices: list[SystemNotice] = field(default_factory=list)
    orders: list[tuple[StoredInbound, Order]] = field(default_factory=list)


def _with_text(stored: StoredInbound, text: str | None, kind: str | None = None) -> StoredInbound:
    return replace(stored, message=replace(stored.message, text=text, type=kind or stored.message.type))


def prepare(batch: list[StoredInbound], offered: tuple[Choice, ...] | None = None) -> Prepared:
    """Sort a turn's messages: what to answer, and what is recorded without an answer."""
    out = Prepared()
    by_wamid: dict[str, int] = {}
    gone: set[int] = set()
    for stored in batch:
        detail: MessageDetail | None = stored.message.detail
        match detail:
            case SystemNotice():
                out.notices.append(detail)
                out.closed.append((stored.inbox_id, "ignored", "a notice from WhatsApp: never answered"))
            case Revoke(original_wamid=original):
                if original:
                    out.revoked.append(original)
                    at = by_wamid.pop(original, None)
                    if at is not None:  # not answered yet: it never will be
                        gone.add(out.answer[at].inbox_id)
                        out.closed.append((out.answer[at].inbox_id, "revoked", "the customer deleted it"))
                out.closed.append((stored.inbox_id, "ignored", "the customer deleted a message"))
            case Edit(original_wamid=original, text=new_text):
                at = by_wamid.get(original) if original else None
                if at is not None:  # still waiting: the turn uses the new text
                    out.answer[at] = _with_text(out.answer[at], new_text)
                    out.closed.append((stored.inbox_id, "done", "applied to the message it edits"))
                elif new_text:
                    out.answer.append(_with_text(
                        stored, f"[The customer edited an earlier message; it now reads:] {new_text}", "text"))
                else:
                    out.closed.append((stored.inbox_id, "ignored", "an edit with nothing to read"))
            case Order():
                out.orders.append((stored, detail))
            case ChoiceReply():
                out.answer.append(_with_text(stored, detail.as_model_text()))
            case FlowReply():
                name = f" «{detail.name}»" if detail.name else ""
                out.answer.append(_with_text(stored, f"[The customer filled in the form{name}:]\n"
                                                     f"{detail.as_text() or '(no answers)'}"))
            case _:
                chosen = match_choice(stored.message.text, offered) if offered else None
                if chosen is not None:  # a typed answer to the choices we offered: "2", or the title
                    title = f"{chosen.title} ({chosen.id})" if chosen.id != chosen.title else chosen.title
                    stored = _with_text(stored, f"{stored.message.text} — the customer chose {title}")
                by_wamid[stored.message.wamid] = len(out.answer)
                out.answer.append(stored)
    out.answer = [s for s in out.answer if s.inbox_id not in gone]
    return out
