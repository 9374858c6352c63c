"""Hook implementations of aiimpl-gha."""
