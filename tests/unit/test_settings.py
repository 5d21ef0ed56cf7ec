from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config_file import DATA_DIR_NAME, data_dir, sqlite_file, use_config_file
from shared.errors import ConfigError
from shared.settings import PlatformKind, RoutingPolicy, load_settings

CONFIG = """
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/"
prefix = "relay"
[store]
url = "sqlite+aiosqlite:///relay.db"
[ingress]
host = "127.0.0.1"
port = 8080
[routing]
policy = "primary"
primary = "b"
[sites.a]
platform = "http-json"
url = "http://127.0.0.1:9001/v1.0/message"
[sites.b]
platform = "kannel"
url = "http://127.0.0.1:14013/cgi-bin/sendsms"
username = "tester"
password = "foobar"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG)
    for var in list(os.environ):
        if var.startswith("RELAY_"):
            monkeypatch.delenv(var)
    use_config_file(path)
    yield path
    use_config_file(None)


def test_toml_file_is_read(config_file: Path) -> None:
    settings = load_settings()
    assert settings.sites["b"].platform is PlatformKind.KANNEL
    assert settings.sites["b"].username == "tester"
    assert settings.routing.policy is RoutingPolicy.PRIMARY
    assert settings.site_names == ["a", "b"]


def test_environment_overrides_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_BROKER__PREFIX", "other")
    monkeypatch.setenv("RELAY_SITES__A__TIMEOUT_S", "1.5")
    monkeypatch.setenv("RELAY_INGRESS__PORT", "9999")
    settings = load_settings()
    assert settings.broker.prefix == "other"
    assert settings.sites["a"].timeout_s == 1.5
    assert settings.sites["a"].url == "http://127.0.0.1:9001/v1.0/message"
    assert settings.ingress.port == 9999


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[sites.c]\nplatform = "ussd"\nurl = "http://x"\n', "sites.c.platform"),
        ("[ingress]\nport = 70000\n", "ingress.port"),
        ('[broker]\nprefxi = "x"\n', "broker.prefxi: unknown key"),
        ('[sites.c]\nurl = "ftp://x"\n', "sites.c.url"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(snippet)
    use_config_file(path)
    try:
        with pytest.raises(ConfigError) as caught:
            load_settings()
    finally:
        use_config_file(None)
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)


def test_routing_must_name_known_sites() -> None:
    with pytest.raises(ConfigError, match="unknown site 'z'"):
        load_settings(routing={"policy": "primary", "primary": "z"})


def test_cli_reports_bad_config_in_one_line_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[ingress]\nport = "eighty"\n')
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--config", str(path), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "ingress.port" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RELAY_ variables, no config file, and a data directory of this test's own."""
    for var in list(os.environ):
        if var.startswith("RELAY_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    use_config_file(None)
    return tmp_path / "data" / DATA_DIR_NAME


def test_the_default_store_and_spool_are_the_same_from_any_folder(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        settings = load_settings()
        seen.append((settings.store.url, settings.ingress.spool_path))
    assert (
        seen[0] == seen[1] == (f"sqlite+aiosqlite:///{clean_env / 'relay.db'}", clean_env / "relay-spool.db")
    )


def test_the_data_directory_follows_xdg_and_ignores_a_relative_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")
    assert data_dir() == tmp_path / ".local" / "share" / DATA_DIR_NAME
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_dir() == tmp_path / ".local" / "share" / DATA_DIR_NAME
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / DATA_DIR_NAME


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "relay.toml").write_text(
        '[store]\nurl = "sqlite+aiosqlite:///state/relay.db?timeout=3"\n'
        '[ingress]\nspool_path = "spool/s.db"\npeer_spool_paths = ["spool/b.db", "/mnt/c/spool.db"]\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    use_config_file(Path("../etc/relay.toml"))
    try:
        settings = load_settings()
    finally:
        use_config_file(None)
    folder = etc.resolve()
    assert settings.store.url == f"sqlite+aiosqlite:///{folder}/state/relay.db?timeout=3"
    assert sqlite_file(settings.store.url) == folder / "state" / "relay.db"
    assert settings.ingress.spool_path == folder / "spool" / "s.db"
    assert settings.ingress.peer_spool_paths == [folder / "spool" / "b.db", Path("/mnt/c/spool.db")]


def test_absolute_paths_and_other_databases_in_a_config_file_stay_as_written(
    clean_env: Path, tmp_path: Path
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[store]\nurl = "postgresql+asyncpg://relay:pw@db:5432/relay"\n'
        '[ingress]\nspool_path = "/var/spool/r.db"\n'
    )
    use_config_file(path)
    try:
        settings = load_settings()
    finally:
        use_config_file(None)
    assert settings.store.url == "postgresql+asyncpg://relay:pw@db:5432/relay"
    assert settings.ingress.spool_path == Path("/var/spool/r.db")


def test_relative_paths_from_the_environment_are_the_current_folders(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_STORE__URL", "sqlite+aiosqlite:///here.db")
    monkeypatch.setenv("RELAY_INGRESS__SPOOL_PATH", "spool.db")
    settings = load_settings()
    assert settings.store.url == "sqlite+aiosqlite:///here.db"
    assert settings.ingress.spool_path == Path("spool.db")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite+aiosqlite:///relay.db", Path("relay.db")),
        ("sqlite+aiosqlite:////var/lib/relay.db", Path("/var/lib/relay.db")),
        ("sqlite:///x.db?timeout=3", Path("x.db")),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///:memory:", None),
        ("sqlite+aiosqlite:///file:x.db?mode=ro&uri=true", None),
        ("postgresql+asyncpg://u@h/db", None),
    ],
)
def test_the_file_of_a_sqlite_url(url: str, path: Path | None) -> None:
    assert sqlite_file(url) == path
