"""`relay` as an operator meets it: which store a command finds from which folder, and what it says when
there is none. Child processes against real SQLite files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shared.config_file import DATA_DIR_NAME
from tests.helpers import RELAY, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No RELAY_ settings but a broker and ingress nobody listens on, and a data directory of this test's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    clean.update(
        XDG_DATA_HOME=str(tmp_path / "data"),
        RELAY_BROKER__URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        RELAY_BROKER__CONNECT_TIMEOUT_S="2",
        RELAY_INGRESS__PORT="1",
        RELAY_LOG__LEVEL="WARNING",
    )
    return clean


def relay(args: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [*RELAY, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_commands_in_other_folders_find_the_store_db_upgrade_made(
    tmp_path: Path, env: dict[str, str]
) -> None:
    upgraded = relay(["db", "upgrade"], env=env, cwd=tmp_path / "checkout")
    assert upgraded.returncode == 0, upgraded.stderr
    store = tmp_path / "data" / DATA_DIR_NAME / "relay.db"
    assert f"store {store} at revision head" in upgraded.stdout
    assert store.is_file()

    created = relay(["keys", "create", "--tenant", "demo"], env=env, cwd=tmp_path / "elsewhere")
    assert created.returncode == 0, created.stderr
    listed = relay(["keys", "list"], env=env, cwd=tmp_path / "yet" / "another")
    assert listed.returncode == 0, listed.stderr
    # Into a pipe: a plain header and one plain line per key.
    header, row = listed.stdout.splitlines()
    assert header.split() == ["tenant", "prefix", "created", "(UTC)", "revoked", "(UTC)"]
    assert row.split()[0] == "demo" and row.split()[-1] == "-"
    assert not list((tmp_path / "elsewhere").iterdir()) and not list((tmp_path / "yet").rglob("*.db"))


def test_relative_paths_in_a_config_file_are_its_folders_whatever_the_current_one(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "deploy" / "relay.toml"
    config.parent.mkdir()
    config.write_text('[store]\nurl = "sqlite+aiosqlite:///state/relay.db"\n')
    upgraded = relay(["--config", "deploy/relay.toml", "db", "upgrade"], env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "deploy" / "state" / "relay.db").is_file()
    listed = relay(["--config", str(config), "dead", "list", "--json"], env=env, cwd=tmp_path / "other")
    assert (listed.returncode, listed.stdout) == (0, ""), listed.stderr


@pytest.mark.parametrize(
    "args",
    [["dead", "list"], ["dead", "show", "0" * 32], ["keys", "list"], ["keys", "create", "--tenant", "x"]],
)
def test_a_command_where_there_is_no_store_says_so_and_creates_none(
    tmp_path: Path, env: dict[str, str], args: list[str]
) -> None:
    missing = tmp_path / "nowhere" / "relay.db"
    result = relay(args, env={**env, "RELAY_STORE__URL": f"sqlite+aiosqlite:///{missing}"}, cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    assert result.stderr.splitlines() == [
        f"relay: there is no store at {missing}: `relay db upgrade` creates it, "
        "or name the store in use with --config or RELAY_STORE__URL"
    ]
    assert not missing.exists() and not missing.parent.exists()


def test_status_where_there_is_no_store_shows_the_rest_and_creates_none(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = relay(["status"], env=env, cwd=tmp_path)
    assert result.returncode == 4, result.stderr  # the broker is down too, and is named first
    assert "broker down  store down" in result.stdout
    assert f"there is no store at {tmp_path / 'data' / DATA_DIR_NAME / 'relay.db'}" in result.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "relay.db").exists()
