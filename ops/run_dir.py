"""What `relay up` leaves in its run directory for the commands that come after it.

`<run-dir>/up.json` names the configuration file the deployment's processes read (absent: none, the
environment and the defaults) and the admin URL of each site's simulated platform. `relay drill` reads it,
so a drill needs no configuration of its own against `make run`. It exists while `relay up` runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigError

RUN_FILE = "up.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFile:
    config: Path | None = None
    simulators: dict[str, str] = field(default_factory=dict)  # site -> admin URL of its simulated platform


def write_run_file(run_dir: Path, run: RunFile) -> Path:
    path = run_dir / RUN_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    document = {"config": None if run.config is None else str(run.config), "simulators": run.simulators}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def read_run_file(run_dir: Path) -> RunFile | None:
    """The run file in `run_dir`; None if there is none; `ConfigError` if it is not one."""
    path = run_dir / RUN_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    config = document.get("config") if isinstance(document, dict) else None
    simulators = document.get("simulators") if isinstance(document, dict) else None
    if not isinstance(simulators, dict) or not isinstance(config, str | None):
        raise ConfigError(f"{path} is not a run file of `relay up`")
    return RunFile(
        config=None if config is None else Path(config),
        simulators={str(site): str(url) for site, url in simulators.items()},
    )


def remove_run_file(run_dir: Path) -> None:
    (run_dir / RUN_FILE).unlink(missing_ok=True)
