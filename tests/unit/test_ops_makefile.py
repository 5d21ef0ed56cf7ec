"""The Makefile's targets each do something, and the files the relay leaves in a checkout are ignored."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.context import local_run_dir
from shared.config_file import DATA_DIR_NAME

ROOT = Path(__file__).resolve().parents[2]


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert match is not None
    return match.group(1).split()


@pytest.mark.parametrize("target", phony_targets())
def test_every_phony_target_has_a_recipe(target: str) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # The venv stamp counts as made, so the dry run lists only the target's own commands.
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "-o", ".venv/.installed", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert result.stdout.strip()


def test_make_run_and_make_drill_share_the_run_directory_every_command_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "-o", ".venv/.installed", "run", "drill"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    run_dir = local_run_dir()
    assert run_dir == tmp_path / DATA_DIR_NAME / "run"
    assert f'.venv/bin/relay up --run-dir "{run_dir}"' in result.stdout
    assert f'.venv/bin/relay drill --run-dir "{run_dir}" --site a --fault down' in result.stdout


@pytest.mark.parametrize(
    "name", ["relay.db", "relay-spool.db", "relay-spool.db.lock", "relay-spool.1.db.lock", ".run/logs/x"]
)
def test_files_the_relay_leaves_in_a_checkout_are_ignored(name: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, timeout=30, check=False)
    assert result.returncode == 0, f"{name} is not ignored"
