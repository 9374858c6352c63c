"""Test kit for the core and for plugin authors.

* :mod:`aiimpl_core.testing.pytest_plugin` — fixtures (databases on SQLite and PostgreSQL, an app,
  an admin client, the providers' clock), loaded automatically by pytest through the ``pytest11``
  entry point.
* :mod:`aiimpl_core.testing.contract` — contract test classes per provider kind: subclass one in
  your plugin's tests and provide the fixture it names.
* :mod:`aiimpl_core.testing.fakes` — an in-memory tracker and runner, registered as plugins,
  ``add_mapping`` to put a mapping in the database, and ``queue_outbox_item`` to put a tracker write
  in the outbox.
* :mod:`aiimpl_core.testing.orchestrator` — drive jobs as the poller does (``poll_once``,
  ``dispatch_issue``, ``reconcile``), play a session's callbacks (``post_result``,
  ``post_progress``) and read jobs afresh (``jobs``, ``fresh``).
* :mod:`aiimpl_core.testing.imports` — ``assert_public_core_api(package)``: fails when a plugin's
  source uses a module of the core that is not public.
* :mod:`aiimpl_core.testing.clock` — ``Clock``, the time the test app's providers read as
  ``context.clock()`` (the ``aiimpl_clock`` fixture).
* :mod:`aiimpl_core.testing.sql` — ``statements()``, the SQL the app sends inside a block (for
  tests that check a cost in statements).
* :mod:`aiimpl_core.testing.swagger2` — ``SwaggerDescription``: checks requests and answers against
  a Swagger 2.0 description (a fake server of a service that publishes one, such as Fly's Machines
  API or the Docker Engine API, answers and is asked only as it describes).
* :mod:`aiimpl_core.testing.ports` — ``free_port()``: a port for a server another process will
  start, outside the range the kernel hands out to outgoing connections meanwhile.
* :mod:`aiimpl_core.testing.serving` — ``serve_wsgi()``: an app (or, with ``ServerThread``, any
  ``socketserver`` server) served on 127.0.0.1 from a thread, its port freed when the block ends.
"""
