"""AI-Implement plugin: Local Docker runner backend."""
