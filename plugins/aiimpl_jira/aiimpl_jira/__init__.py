"""AI-Implement plugin: Jira Cloud ticketing provider and /api/jira endpoints."""
