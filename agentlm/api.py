"""Names the API publishes, for the parts that only talk to it over HTTP (the UI, the CLI's chat)."""

DEFAULT_API_URL = "http://127.0.0.1:8000/v1"  # `agentlm serve`'s default host and port
AGENT_OWNER = "agentlm-agent"  # `owned_by` of the model ids that are agent profiles (GET /v1/models)
