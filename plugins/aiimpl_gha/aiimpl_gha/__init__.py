"""AI-Implement plugin: the GitHub Actions runner backend (``github-actions``, runner mode ``gha``)."""
