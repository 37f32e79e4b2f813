"""Training data: formats, chat templates and loss masks, loaders (AgentInstruct, ShareGPT), trajectory
collection with a teacher, filtering, mixing at eta, and export of logged runs (docs/architecture.md)."""
