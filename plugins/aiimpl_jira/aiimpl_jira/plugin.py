"""Hook implementations of aiimpl-jira."""
