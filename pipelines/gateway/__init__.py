"""System A's inference gateway: one OpenAI-compatible API in front of every model (see ``app``)."""
