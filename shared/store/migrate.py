"""Runs the Alembic migrations: the only way the store's schema is made or changed."""

from __future__ import annotations

from importlib.util import find_spec

from alembic import command
from alembic.config import Config

from shared.errors import ConfigError
from shared.settings import StoreSettings


def migrations_folder() -> str:
    """Where the installed `migrations` package lies, found without importing it (the store library
    must not depend on the migration scripts, which import the store's models)."""
    spec = find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the migrations package is not installed")
    return str(next(iter(spec.submodule_search_locations)))


def alembic_config(settings: StoreSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", migrations_folder())
    config.set_main_option("sqlalchemy.url", settings.url)
    return config


def upgrade(settings: StoreSettings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def current_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(StoreSettings())).get_current_head()
