"""Marshmallow schemas of the HTTP API (request bodies, responses, the error body)."""
