"""The AgentLM server: an OpenAI-compatible API over a model, with agent profiles run server-side.

- ``protocol``: the request and response shapes (pydantic only).
- ``serving``: the logic behind the routes; ``agents``: agent runs over the engine in a thread.
- ``app``: FastAPI routes, OpenAI-shaped errors, ``create_app(settings)`` and ``run(settings)``.
- ``engines``: the abstract ``Engine`` and its implementations, imported lazily by name.
- ``store``: the SQLite trajectory store (with user feedback).
- ``settings``: ``ServeSettings``, from ``AGENTLM_*`` variables and CLI flags.

Nothing heavy is imported here: ``from agentlm.serve.app import create_app`` when you need it.
"""
