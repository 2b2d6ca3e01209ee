"""Persistence: one Database (SQLite or PostgreSQL) and a repository per table group."""

from __future__ import annotations

from dataclasses import dataclass

from bot.persistence.assistant import AssistantSettingsRepo, KnowledgeRepo
from bot.persistence.canned import CannedReplyRepo
from bot.persistence.commands import CommandRepo
from bot.persistence.conversations import ConversationRepo
from bot.persistence.crm import ContactRepo, OrderRepo, ProductRepo
from bot.persistence.database import Database
from bot.persistence.desk import DeskRepo
from bot.persistence.export import ExportRepo
from bot.persistence.inbox import ErrorRepo, InboxRepo
from bot.persistence.labels import LabelRepo
from bot.persistence.notes import NoteRepo
from bot.persistence.outbox import OutboxRepo
from bot.persistence.stats import StatsRepo
from bot.persistence.templates import TemplateRepo
from bot.persistence.usage import BusinessSettingsRepo, UsageRepo
from bot.persistence.users import AuditRepo, UserRepo
from bot.persistence.webhooks import WebhookRepo


@dataclass(frozen=True, slots=True)
class Repositories:
    """Every repository, built on one Database."""

    db: Database
    conversations: ConversationRepo
    inbox: InboxRepo
    outbox: OutboxRepo
    commands: CommandRepo
    errors: ErrorRepo
    contacts: ContactRepo
    products: ProductRepo
    orders: OrderRepo
    users: UserRepo
    audit: AuditRepo
    assistant: AssistantSettingsRepo
    knowledge: KnowledgeRepo
    stats: StatsRepo
    templates: TemplateRepo
    usage: UsageRepo
    business: BusinessSettingsRepo
    # The support desk (migration 0007): tables the web layer writes directly, none of them the actors'.
    desk: DeskRepo
    labels: LabelRepo
    notes: NoteRepo
    canned: CannedReplyRepo
    webhooks: WebhookRepo
    exports: ExportRepo

    @classmethod
    def on(cls, db: Database) -> Repositories:
        """Build them all on an open database."""
        return cls(
            db=db,
            conversations=ConversationRepo(db),
            inbox=InboxRepo(db),
            outbox=OutboxRepo(db),
            commands=CommandRepo(db),
            errors=ErrorRepo(db),
            contacts=ContactRepo(db),
            products=ProductRepo(db),
            orders=OrderRepo(db),
            users=UserRepo(db),
            audit=AuditRepo(db),
            assistant=AssistantSettingsRepo(db),
            knowledge=KnowledgeRepo(db),
            stats=StatsRepo(db),
            templates=TemplateRepo(db),
            usage=UsageRepo(db),
            business=BusinessSettingsRepo(db),
            desk=DeskRepo(db),
            labels=LabelRepo(db),
            notes=NoteRepo(db),
            canned=CannedReplyRepo(db),
            webhooks=WebhookRepo(db),
            exports=ExportRepo(db),
        )
