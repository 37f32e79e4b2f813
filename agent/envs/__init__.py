"""Task environments with rewards (AgentBench DB and OS)."""
