"""Built-in plugins, registered like third-party ones (see ``aiimpl_core.plugins.DEFAULT_PLUGINS``)."""
