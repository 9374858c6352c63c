"""The session program (``aiimpl session run``) that runs inside every runner."""
