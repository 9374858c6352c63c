import contextlib
import logging

from alembic import context
from alembic.util import CommandError
from flask import current_app

from aiimpl_core.database import MIGRATING, newer_schema_problem, one_migration_at_a_time
from aiimpl_core.errors import AiimplError

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Alembic's progress ("Running upgrade …") at INFO, through the handlers the app set up (lines in
# AIIMPL_LOG_FORMAT, masked of the known secrets): alembic.ini's fileConfig would replace the root
# logger's handlers with a text one of its own, for this process's whole life. The CLI logs warnings
# only unless told otherwise, but shows this progress; an AIIMPL_LOG_LEVEL above INFO hides it
# (Flask-Migrate's logger says only why a command failed: always shown). A level the host set (the
# demo quiets Alembic) is kept.
_configured = logging.getLevelName(str(current_app.config.get('AIIMPL_LOG_LEVEL') or 'INFO').upper())
for _name, _level in (('alembic', max(logging.INFO, _configured)), ('flask_migrate', logging.INFO)):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)
logger = logging.getLogger('alembic.env')


def _progress_only(record):
    """Alembic's lines of every run, migrating or not (``aiimpl db current`` too): its engine's
    name and whether it assumes transactional DDL, which say nothing to an operator (shown at DEBUG)."""
    return _configured <= logging.DEBUG or not str(record.msg).startswith(('Context impl', 'Will assume'))


_runtime = logging.getLogger('alembic.runtime.migration')
for _old in [f for f in _runtime.filters if getattr(f, '__name__', '') == '_progress_only']:
    _runtime.removeFilter(_old)  # this module runs once per command: one filter, of this run's level
_runtime.addFilter(_progress_only)


def get_engine():
    return current_app.extensions['migrate'].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace(
            '%', '%%')
    except AttributeError:
        return str(get_engine().url).replace('%', '%%')


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option('sqlalchemy.url', get_engine_url())
target_db = current_app.extensions['migrate'].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, 'metadatas'):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url, target_metadata=get_metadata(), literal_binds=True
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, 'autogenerate', False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info('No changes in schema detected.')

    conf_args = current_app.extensions['migrate'].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    def waiting():
        logger.info('Another migration run is under way: waiting for it to end.')

    def held(connection):
        # a command that only reads (`aiimpl db current`) answers while a migration runs: it neither
        # waits for the lock nor, on SQLite, takes the write lock itself
        if config.attributes.get(MIGRATING, True):
            return one_migration_at_a_time(connection, waiting)
        return contextlib.nullcontext({})

    with connectable.connect() as connection, held(connection) as options:
        context.configure(
            connection=connection,
            target_metadata=get_metadata(),
            **options,
            **conf_args
        )

        try:
            with context.begin_transaction():
                context.run_migrations()
        except CommandError:
            # Alembic says "Can't locate revision": say that a newer version made the schema
            problem = _newer_schema(connection)
            if problem:
                raise AiimplError(problem) from None
            raise


def _newer_schema(connection):
    try:
        connection.rollback()
        return newer_schema_problem(context.get_context().get_current_heads())
    except Exception:  # noqa: BLE001 - Alembic's own error says more than this one
        return None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
