"""Hook implementations of aiimpl-docker."""
