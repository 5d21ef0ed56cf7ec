"""Runs the Alembic migrations: the only way the store's schema is made or changed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from shared.settings import StoreSettings


def alembic_config(settings: StoreSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", settings.url)
    return config


def upgrade(settings: StoreSettings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def current_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(StoreSettings())).get_current_head()
