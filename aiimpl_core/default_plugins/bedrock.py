"""Built-in model provider ``bedrock``: Claude on AWS Bedrock, in a region the mapping names."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import hookimpl
from ..errors import ProviderConfigError
from ..providers import ConfigVar, ModelProvider
from ..types import MappingView

#: Backends whose sessions cannot reach Bedrock (no AWS credentials chain on Fly Machines).
UNSUPPORTED_EXECUTION_MODES = ("fly-machines",)

_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class BedrockProvider(ModelProvider):
    id = "bedrock"
    display_name = "AWS Bedrock"
    config_vars = (
        ConfigVar(
            "AIIMPL_BEDROCK_AWS_ACCESS_KEY_ID", "AWS access key id for sessions", sensitive=True
        ),
        ConfigVar(
            "AIIMPL_BEDROCK_AWS_SECRET_ACCESS_KEY", "AWS secret access key for sessions", sensitive=True
        ),
        ConfigVar(
            "AIIMPL_BEDROCK_AWS_SESSION_TOKEN", "AWS session token for sessions (optional)", sensitive=True
        ),
        ConfigVar(
            "AIIMPL_BEDROCK_MODEL", "Bedrock model id passed to sessions as ANTHROPIC_MODEL (optional)"
        ),
    )

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        if not mapping.get("awsRegion"):
            raise ProviderConfigError("awsRegion is required when provider is 'bedrock'", provider=self.id)
        mode = mapping.get("executionMode")
        if mode in UNSUPPORTED_EXECUTION_MODES:
            raise ProviderConfigError(
                f"provider 'bedrock' is not supported with executionMode '{mode}'", provider=self.id
            )

    def session_env(self, mapping: MappingView) -> dict[str, str]:
        env = {"CLAUDE_CODE_USE_BEDROCK": "1"}
        if mapping.aws_region:
            env["AWS_REGION"] = mapping.aws_region
        for var in _AWS_VARS:
            value = self.context.setting(f"AIIMPL_BEDROCK_{var}")
            if value:
                env[var] = value
        model = self.context.setting("AIIMPL_BEDROCK_MODEL")
        if model:
            env["ANTHROPIC_MODEL"] = model
        return env

    def secret_env_names(self, mapping: MappingView) -> frozenset[str]:
        return frozenset(_AWS_VARS)


@hookimpl(trylast=True)
def aiimpl_register_model_providers(register):  # noqa: ANN001, ANN201
    register(BedrockProvider)
