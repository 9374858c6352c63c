"""The built-in model providers pass the model contract and apply the reference's rules."""
from __future__ import annotations

import pytest

from aiimpl_core.default_plugins.anthropic import AnthropicProvider
from aiimpl_core.default_plugins.bedrock import BedrockProvider
from aiimpl_core.errors import ProviderConfigError
from aiimpl_core.testing.contract import ModelProviderContract, make_context, sample_mapping


class TestAnthropicContract(ModelProviderContract):
    @pytest.fixture
    def model_provider(self):
        return AnthropicProvider(make_context({"AIIMPL_ANTHROPIC_API_KEY": "sk-test"}))


class TestBedrockContract(ModelProviderContract):
    @pytest.fixture
    def model_provider(self):
        return BedrockProvider(make_context({}))

    @pytest.fixture
    def valid_mapping(self):
        return {
            "teamKey": "ENG",
            "provider": "bedrock",
            "awsRegion": "us-east-1",
            "executionMode": "github-actions",
        }


def test_bedrock_needs_region():
    with pytest.raises(ProviderConfigError) as err:
        BedrockProvider(make_context({})).validate_mapping({"provider": "bedrock"})
    assert err.value.message == "awsRegion is required when provider is 'bedrock'"


def test_bedrock_refused_on_fly():
    with pytest.raises(ProviderConfigError) as err:
        BedrockProvider(make_context({})).validate_mapping(
            {"provider": "bedrock", "awsRegion": "eu-west-1", "executionMode": "fly-machines"})
    assert err.value.message == "provider 'bedrock' is not supported with executionMode 'fly-machines'"


def test_anthropic_env_marks_the_key_secret():
    provider = AnthropicProvider(make_context({"AIIMPL_ANTHROPIC_API_KEY": "sk-test"}))
    mapping = sample_mapping()
    assert provider.session_env(mapping)["ANTHROPIC_API_KEY"] == "sk-test"
    assert "ANTHROPIC_API_KEY" in provider.secret_env_names(mapping)


@pytest.mark.parametrize(("config", "stored"), [
    ({"AIIMPL_ANTHROPIC_API_KEY": "sk-test\n"}, None),  # a secret file's line break
    ({}, "  sk-test\r\n"),  # stored pasted with spaces and a line break
    ({"AIIMPL_ANTHROPIC_API_KEY": " \n"}, "sk-test"),  # a blank variable is no key
])
def test_anthropic_key_is_sent_without_the_blanks_around_it(config, stored):
    provider = AnthropicProvider(make_context(config, secret=lambda name, scope=None: stored))
    assert provider.session_env(sample_mapping())["ANTHROPIC_API_KEY"] == "sk-test"


def test_bedrock_env_carries_region():
    env = BedrockProvider(make_context({"AIIMPL_BEDROCK_AWS_ACCESS_KEY_ID": "AKIA"})).session_env(
        sample_mapping(provider="bedrock", aws_region="eu-west-1"))
    assert env == {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIA"}
