"""Built-in model provider ``anthropic``: the Anthropic API, with an API key."""
from __future__ import annotations

from .. import hookimpl
from ..providers import ConfigVar, ModelProvider
from ..types import MappingView


class AnthropicProvider(ModelProvider):
    id = "anthropic"
    display_name = "Anthropic API"
    config_vars = (
        ConfigVar(
            "AIIMPL_ANTHROPIC_API_KEY", "API key passed to sessions as ANTHROPIC_API_KEY", sensitive=True
        ),
        ConfigVar("AIIMPL_ANTHROPIC_MODEL", "Model name passed to sessions as ANTHROPIC_MODEL (optional)"),
    )

    def is_configured(self) -> bool:
        return bool(self.context.setting("AIIMPL_ANTHROPIC_API_KEY"))

    def session_env(self, mapping: MappingView) -> dict[str, str]:
        env: dict[str, str] = {}
        key = (
            self.context.setting("AIIMPL_ANTHROPIC_API_KEY")
            or self.context.secret("ANTHROPIC_API_KEY", None)
        )
        if key:
            env["ANTHROPIC_API_KEY"] = key
        model = self.context.setting("AIIMPL_ANTHROPIC_MODEL")
        if model:
            env["ANTHROPIC_MODEL"] = model
        return env

    def secret_env_names(self, mapping: MappingView) -> frozenset[str]:
        return frozenset({"ANTHROPIC_API_KEY"})


@hookimpl(trylast=True)
def aiimpl_register_model_providers(register):  # noqa: ANN001, ANN201
    register(AnthropicProvider)
