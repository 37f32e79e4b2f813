"""Tools the agent can call, each a langchain-core BaseTool."""
