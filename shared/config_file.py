"""Where the configuration file and the relay's files are: the TOML file named by ``--config`` or
``RELAY_CONFIG``, its relative paths taken from its own folder, and the data directory of the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_settings import TomlConfigSettingsSource

from shared.errors import ConfigError

CONFIG_ENV = "RELAY_CONFIG"
DATA_DIR_NAME = "sms-ha-relay"

_config_path: Path | None = None


def use_config_file(path: Path | None) -> None:
    """Name the TOML file later `load_settings()` calls read (the CLI's ``--config``)."""
    global _config_path
    _config_path = path


def data_dir() -> Path:
    """Where the store and the spool live unless configured: ``$XDG_DATA_HOME/sms-ha-relay``, by default
    ``~/.local/share/sms-ha-relay`` (the XDG base directory rule; a relative XDG_DATA_HOME is ignored)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / DATA_DIR_NAME


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store URL; None for other databases, in-memory and ``file:`` URI stores."""
    from sqlalchemy.engine import make_url  # only here: the simulator needs no SQLAlchemy

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def _rebased_sqlite_url(url: str, base: Path) -> str:
    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=str(base / path)).render_as_string(hide_password=False)


def _rebased_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The TOML file's relative file paths taken from `base`, its folder. Anything malformed is left for
    validation to report."""
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        store["url"] = _rebased_sqlite_url(store["url"], base)
    ingress = data.get("ingress")
    if not isinstance(ingress, dict):
        return data
    if isinstance(ingress.get("spool_path"), str):
        ingress["spool_path"] = str(base / Path(ingress["spool_path"]))
    peers = ingress.get("peer_spool_paths")
    if isinstance(peers, list):
        ingress["peer_spool_paths"] = [str(base / Path(p)) if isinstance(p, str) else p for p in peers]
    return data


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML file, its relative paths taken from its own folder rather than the current directory."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        return _rebased_paths(data, Path(file_path).resolve().parent)


def default_store_url() -> str:
    return f"sqlite+aiosqlite:///{data_dir() / 'relay.db'}"


def default_spool_path() -> Path:
    return data_dir() / "relay-spool.db"


def config_file_in_use() -> Path | None:
    """The TOML file the settings come from (``--config`` or ``RELAY_CONFIG``), if any."""
    return config_file()


def config_file() -> Path | None:
    raw = _config_path if _config_path is not None else os.environ.get(CONFIG_ENV)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    # Absolute: the children `relay up` starts get the same file wherever they run.
    return path.resolve()
