"""Hook implementations of aiimpl-linear."""
