"""Agent backends: each implements ``ports.AgentBackend``."""
