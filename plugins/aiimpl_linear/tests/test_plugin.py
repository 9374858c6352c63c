"""The distribution is found through its entry point and registers what it says."""

from __future__ import annotations

from importlib import metadata

from aiimpl_core.plugins import Plugins
from aiimpl_core.testing.contract import make_context

from aiimpl_linear.provider import LinearProvider


def test_entry_point_in_group_aiimpl() -> None:
    [ep] = [ep for ep in metadata.entry_points(group="aiimpl") if ep.name == "linear"]
    assert ep.value == "aiimpl_linear.plugin"


def test_loaded_from_entry_points_it_registers_the_provider_and_the_webhook() -> None:
    facade = Plugins(load_entrypoints=True)
    record = facade.records["linear"]
    assert record.error is None, record.error
    assert {"kind": "ticketing", "id": "linear", "name": "Linear"} in record.provides
    assert facade.classes["ticketing"]["linear"] is LinearProvider
    rules = {
        rule.rule for _name, bp, _opts in facade.blueprints() if bp.name == "linear" for rule in [*_rules(bp)]
    }
    assert rules == {"/api/linear/webhook"}


def _rules(blueprint) -> list:  # noqa: ANN001
    from flask import Flask

    app = Flask("probe")
    app.register_blueprint(blueprint)
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith("linear.")]


def test_config_vars_mark_the_secrets_sensitive() -> None:
    sensitive = {v.name for v in LinearProvider.config_vars if v.sensitive}
    assert sensitive == {"AIIMPL_LINEAR_API_KEY", "AIIMPL_LINEAR_OAUTH_TOKEN", "AIIMPL_LINEAR_WEBHOOK_SECRET"}
    defaults = {v.name: v.default for v in LinearProvider.config_vars}
    assert defaults["AIIMPL_LINEAR_API_URL"] == "https://api.linear.app/graphql"


def test_provider_capabilities() -> None:
    assert LinearProvider.supports_webhooks is True
    provider = LinearProvider(make_context({}))
    assert provider.team_of("ENG-12") == "ENG"
