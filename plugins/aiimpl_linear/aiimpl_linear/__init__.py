"""AI-Implement plugin: Linear ticketing provider."""
