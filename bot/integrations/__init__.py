"""Other systems the server talks to on its own initiative: outbound event webhooks (a CRM, n8n)."""
