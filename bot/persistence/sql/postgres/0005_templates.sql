-- The WhatsApp Business Account's message templates, as last synced from the Graph API, with the
-- review status Meta's message_template_status_update webhooks report in between syncs.

CREATE TABLE whatsapp_templates (
    waba_id TEXT NOT NULL,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    template_id TEXT,
    status TEXT NOT NULL,
    category TEXT,
    body_text TEXT,
    parameter_count INTEGER NOT NULL DEFAULT 0 CHECK (parameter_count >= 0),
    components_json TEXT NOT NULL DEFAULT '[]',
    reason TEXT,
    synced_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (waba_id, name, language)
);
CREATE INDEX whatsapp_templates_id ON whatsapp_templates (template_id);
