"""Example runner plugin: dispatches to a spool directory."""
