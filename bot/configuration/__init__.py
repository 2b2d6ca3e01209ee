"""How the server is configured: boot configuration (environment), the settings turns run with, the
settings page's stored values, and the encryption of secrets at rest."""
