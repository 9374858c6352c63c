"""Test helpers shipped with aiimpl-jira: a fake Jira site checked against Jira's OpenAPI description."""

from __future__ import annotations
