"""AI-Implement plugin: Fly Machines runner backend."""
