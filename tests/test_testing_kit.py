"""The test kit's ``app`` fixture (:mod:`aiimpl_core.testing.pytest_plugin`): the apps of one test
process on the same database and engine settings share one engine."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from aiimpl_core.app import create_app
from aiimpl_core.extensions import db
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY, _with_shared_engine


def test_apps_on_one_database_share_its_engine_and_other_settings_get_another(
    app: Any, database_url: str, aiimpl_databases: Any
) -> None:
    engine = db.engine
    assert engine in aiimpl_databases.engines.values()
    config = {"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY, "TESTING": True}
    again = _with_shared_engine(aiimpl_databases, create_app, dict(config), load_entrypoints=False,
                                environ={})
    other = _with_shared_engine(aiimpl_databases, create_app,
                                {**config, "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 3}},
                                load_entrypoints=False, environ={})
    own = create_app(dict(config), load_entrypoints=False, environ={})
    with again.app_context():
        assert db.engine is engine
    with other.app_context():
        assert db.engine is not engine
    with own.app_context():
        assert db.engine is not engine and db.engine not in aiimpl_databases.engines.values()
        with db.engine.connect() as conn:  # an engine of its own that works
            assert conn.execute(text("SELECT 1")).scalar() == 1
        db.engine.dispose()
