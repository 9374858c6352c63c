"""Hook implementations of aiimpl-fly."""
