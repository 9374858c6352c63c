"""AI-Implement plugin: GitHub Actions runner backend."""
