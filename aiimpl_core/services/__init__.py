"""Business rules shared by the HTTP API, the poller and the CLI."""
