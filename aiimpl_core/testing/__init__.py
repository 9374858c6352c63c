"""Test kit for the core and for plugin authors.

* :mod:`aiimpl_core.testing.pytest_plugin` — fixtures (databases on SQLite and PostgreSQL, an app,
  an admin client), loaded automatically by pytest through the ``pytest11`` entry point.
* :mod:`aiimpl_core.testing.contract` — contract test classes per provider kind: subclass one in
  your plugin's tests and provide the fixture it names.
* :mod:`aiimpl_core.testing.fakes` — an in-memory tracker and runner, registered as plugins.
"""
