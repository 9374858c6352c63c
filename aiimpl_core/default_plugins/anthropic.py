"""Built-in model provider ``anthropic``: the Anthropic API, with an API key."""
from __future__ import annotations

from .. import hookimpl
from ..providers import ConfigVar, ModelProvider
from ..types import MappingView


class AnthropicProvider(ModelProvider):
    id = "anthropic"
    display_name = "Anthropic API"
    setup_hint = "set AIIMPL_ANTHROPIC_API_KEY, or a secret ANTHROPIC_API_KEY (global or the team's)"
    config_vars = (
        ConfigVar(
            "AIIMPL_ANTHROPIC_API_KEY", "API key passed to sessions as ANTHROPIC_API_KEY", sensitive=True
        ),
        ConfigVar("AIIMPL_ANTHROPIC_MODEL", "Model name passed to sessions as ANTHROPIC_MODEL (optional)"),
    )

    def is_configured(self) -> bool:
        return bool(_stripped(self.context.setting("AIIMPL_ANTHROPIC_API_KEY")))

    def session_env(self, mapping: MappingView) -> dict[str, str]:
        env: dict[str, str] = {}
        # (a key pasted or read from a file with its line break, or spaces around it, is the same
        # key: sent as a header, the session's every request to the API would fail with them)
        key = (
            _stripped(self.context.setting("AIIMPL_ANTHROPIC_API_KEY"))
            or _stripped(self.context.secret("ANTHROPIC_API_KEY", None))
        )
        if key:
            env["ANTHROPIC_API_KEY"] = key
        model = self.context.setting("AIIMPL_ANTHROPIC_MODEL")
        if model:
            env["ANTHROPIC_MODEL"] = model
        return env

    def secret_env_names(self, mapping: MappingView) -> frozenset[str]:
        return frozenset({"ANTHROPIC_API_KEY"})

    def required_env_names(self, mapping: MappingView) -> frozenset[str]:
        return frozenset({"ANTHROPIC_API_KEY"})


def _stripped(value: object) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


@hookimpl(trylast=True)
def aiimpl_register_model_providers(register):  # noqa: ANN001, ANN201
    register(AnthropicProvider)
