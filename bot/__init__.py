"""bot: a WhatsApp Cloud API assistant server on the OpenAI Responses API."""

__version__ = "0.1.0"
