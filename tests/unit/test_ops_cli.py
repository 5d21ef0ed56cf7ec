"""The `relay` entry point without services: usage errors, help, exit codes, interrupts, site checks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from ops import cli
from ops.app import app
from ops.commands import paused, until_stopped
from ops.context import check_site, local_run_dir, settings
from ops.run_dir import RunFile, remove_run_file, write_run_file
from shared.config_file import DATA_DIR_NAME, use_config_file
from shared.errors import ValidationFailed
from shared.settings import Settings
from tests.helpers import RELAY, SITES

BOX_CHARACTERS = set("│┃─━┏┓┗┛╭╮╰╯")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.run(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dead", "list", "--bogus"], "No such option: --bogus"),
        (["dead", "lst"], "No such command 'lst'"),
        (["dead", "list", "--limit", "many"], "--limit"),
        (["dead", "purge"], "--older-than"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["status", "--interval", "0"], "--interval: must be more than zero"),
    ],
)
def test_usage_errors_are_one_line_starting_relay_with_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("relay: ") and expected in lines[0]
    assert not BOX_CHARACTERS & set(err)


def test_a_group_without_a_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["dead"], capsys)
    assert code == 2
    assert "Usage: relay dead [OPTIONS] COMMAND" in err and "replay" in err


def test_a_bad_config_file_is_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["--config", str(tmp_path / "none.toml"), "status"], capsys)
    assert code == 2
    assert err == f"relay: config file {tmp_path / 'none.toml'} does not exist\n"


def _commands(group: typer.Typer, path: list[str]) -> list[list[str]]:
    found = [path]
    for info in group.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        found.append([*path, name])
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name is not None
        found.extend(_commands(sub.typer_instance, [*path, sub.name]))
    return found


@pytest.mark.parametrize("command", _commands(app, []), ids=lambda c: " ".join(c) or "relay")
def test_help_is_plain_and_flags_take_no_value(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    assert out.startswith("Usage: relay")
    assert "<bool>" not in out
    assert not BOX_CHARACTERS & set(out)


def test_replay_names_its_ids_once(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["dead", "replay", "--help"], capsys)
    assert "Usage: relay dead replay [OPTIONS] [ID]..." in out
    assert "[[ID]" not in out


def test_site_options_must_name_a_configured_site() -> None:
    config = Settings(sites=SITES)  # type: ignore[arg-type]
    check_site(config, "a")
    check_site(config, None)
    check_site(config, "gone", known={"gone"})
    with pytest.raises(ValidationFailed) as caught:
        check_site(config, "zz", option="--to-site")
    assert str(caught.value) == "--to-site: unknown site 'zz'; configured sites: a, b"
    with pytest.raises(ValidationFailed, match="configured sites: none"):
        check_site(Settings(), "a")


@pytest.fixture
def no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No RELAY_ variables and a data directory of this test's own; returns `make run`'s run directory."""
    for var in list(os.environ):
        if var.startswith("RELAY_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    yield local_run_dir()
    use_config_file(None)
    settings.cache_clear()


def test_commands_read_the_configuration_of_the_relay_make_run_runs(
    no_configuration: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert no_configuration == tmp_path / "data" / DATA_DIR_NAME / "run"
    config = tmp_path / "generated.toml"
    config.write_text('[sites.north]\nurl = "http://127.0.0.1:9001/v1.0/message"\n')
    write_run_file(no_configuration, RunFile(config=config, simulators={}))
    _, _, err = run(["worker", "--site", "zz"], capsys)
    assert err == "relay: --site: unknown site 'zz'; configured sites: north\n"

    other = tmp_path / "other.toml"
    other.write_text('[sites.south]\nurl = "http://127.0.0.1:9002/v1.0/message"\n')
    _, _, err = run(["--config", str(other), "worker", "--site", "zz"], capsys)
    assert err.endswith("configured sites: south\n")  # a configuration named wins

    remove_run_file(no_configuration)
    _, _, err = run(["worker", "--site", "zz"], capsys)
    assert err.endswith("configured sites: none\n")


def test_an_interrupt_while_the_commands_load_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """The interrupt lands while `ops.app` imports its dependencies: Python's import log (-X importtime)
    says when `typer`, imported just before it, is done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_STORE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    python, *module = RELAY
    proc = subprocess.Popen(
        [python, "-X", "importtime", *module, "dead", "list"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.rstrip().endswith("| typer"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (tmp_path / "relay.db").exists()


async def test_a_stop_signal_ends_the_work_after_what_it_is_doing_and_a_second_at_once() -> None:
    finished: list[str] = []

    async def patient(stop: asyncio.Event) -> None:
        while not await paused(stop, 0.05):
            pass
        await asyncio.sleep(0.1)  # what it was doing when asked to stop: it is let finish
        finished.append("patient")

    async def stubborn(stop: asyncio.Event) -> None:
        await stop.wait()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            finished.append("cancelled")
            raise

    loop = asyncio.get_running_loop()
    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
    started = time.monotonic()
    await until_stopped(patient)
    loop.call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
    loop.call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)
    await until_stopped(stubborn)
    assert finished == ["patient", "cancelled"]
    assert time.monotonic() - started < 10
    # The loop's handlers are gone again: a later Ctrl-C is an ordinary KeyboardInterrupt.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
