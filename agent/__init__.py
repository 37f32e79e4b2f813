"""The ReAct runtime: action protocols, the agent loop, tools, profiles and task environments."""
