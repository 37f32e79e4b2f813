"""AgentLM: serve an agent-tuned LLM, run agents with tools, log what they do, retrain on it."""

__version__ = "0.1.0"
