"""``describe_plugin_error``: what may be shown of an error a plugin raised."""
from __future__ import annotations

import pytest

from aiimpl_core.errors import AiimplError, ProviderError, describe_plugin_error


def test_describe_plugin_error_shows_a_project_errors_message() -> None:
    assert describe_plugin_error(ProviderError("the tracker answered 401")) == "the tracker answered 401"


def test_describe_plugin_error_names_only_the_class_of_a_foreign_error() -> None:
    text = describe_plugin_error(RuntimeError("API_KEY=sk-secret is invalid"))
    assert text == "unexpected error (RuntimeError)"
    assert "secret" not in text


def test_describe_plugin_error_masks_a_project_errors_message_only() -> None:
    def mask(message: str) -> str:
        return message.replace("sk-secret", "***")

    assert describe_plugin_error(AiimplError("key sk-secret refused"), mask=mask) == "key *** refused"
    assert describe_plugin_error(KeyError("sk-secret"), mask=mask) == "unexpected error (KeyError)"


@pytest.mark.parametrize("exc", [AiimplError("ours"), ValueError("theirs")])
def test_describe_plugin_error_logs_a_foreign_error_only(exc: Exception) -> None:
    logged: list[BaseException] = []
    text = describe_plugin_error(exc, foreign="{cls}; see the log", log_foreign=logged.append)
    if isinstance(exc, AiimplError):
        assert (text, logged) == ("ours", [])
    else:
        assert (text, logged) == ("ValueError; see the log", [exc])
