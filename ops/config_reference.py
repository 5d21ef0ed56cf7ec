"""The README's configuration reference, generated from the settings models so it cannot drift.

python -m ops.config_reference            # print the reference
python -m ops.config_reference --write README.md   # replace it between the markers
python -m ops.config_reference --check README.md   # exit 1 when the README is stale
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.config_file import CONFIG_ENV, DATA_DIR_NAME, data_dir
from shared.settings import Settings, SiteSettings

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
ENV_PREFIX = "RELAY_"
NESTED = "__"
# The data directory as the reference shows it: the same text on every machine.
DATA_DIR_SHOWN = f"~/.local/share/{DATA_DIR_NAME}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    key: str  # as written in the TOML file, e.g. "broker.url" or "sites.<name>.url"
    env: str  # e.g. "RELAY_BROKER__URL"
    default: str  # as it would be written in TOML, or "(required)"
    description: str


def _field_name(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _toml_value(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return '"' + str(value).replace(str(data_dir()), DATA_DIR_SHOWN) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return _toml_value(info.default_factory())  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return "(required)"
    return _toml_value(info.default)


def _section_entries(
    section: str, model: type[BaseModel], *, key_prefix: str, env_prefix: str
) -> list[Entry]:
    entries = []
    for name, info in model.model_fields.items():
        field = _field_name(name, info)
        entries.append(
            Entry(
                key=f"{key_prefix}.{field}",
                env=f"{env_prefix}{NESTED}{field.upper()}",
                default=_default(info),
                description=info.description or "",
            )
        )
    return entries


def entries() -> list[Entry]:
    """Every setting, in the order `Settings` declares its sections and their keys."""
    found: list[Entry] = []
    for section, info in Settings.model_fields.items():
        annotation = info.annotation
        env_prefix = f"{ENV_PREFIX}{section.upper()}"
        if section == "sites":
            found.extend(
                _section_entries(
                    section, SiteSettings, key_prefix="sites.<name>", env_prefix=f"{env_prefix}{NESTED}<NAME>"
                )
            )
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_section_entries(section, annotation, key_prefix=section, env_prefix=env_prefix))
        else:
            raise TypeError(f"settings section {section!r} is neither a model nor the sites table")
    return found


def render() -> str:
    lines = [
        "Every key can be set in the TOML file named by `--config` or `"
        + CONFIG_ENV
        + "` (as `[section]` tables;",
        "with neither, a command reads the file of the relay `make run` runs, while it runs)",
        "or by an environment variable, which wins. Lists and tables in environment variables are JSON,",
        "e.g. `RELAY_WORKER__RETRY_DELAYS_S='[1,5,30]'`. Sites are a table of tables: `[sites.a]`,",
        "`RELAY_SITES__A__URL=...`. No site is configured by default: name every site you want (`relay up`",
        "runs two simulated sites, `a` and `b`, when none is named).",
        "",
        "A relative file path (a SQLite `store.url`, `ingress.spool_path`) written in the TOML file is",
        "taken from the file's own folder; one given in the environment, from the current directory.",
        f"By default both files lie in the data directory, `{DATA_DIR_SHOWN}`",
        f"(`$XDG_DATA_HOME/{DATA_DIR_NAME}` when XDG_DATA_HOME is set), whatever folder a command runs in.",
        "",
        "| Key | Environment variable | Default | Description |",
        "|---|---|---|---|",
    ]
    for entry in entries():
        description = entry.description.replace("|", "\\|")
        default = entry.default.replace("|", "\\|")
        lines.append(f"| `{entry.key}` | `{entry.env}` | `{default}` | {description} |")
    return "\n".join(lines) + "\n"


def splice(document: str, reference: str) -> str:
    """`document` with the text between the markers replaced by `reference`."""
    start = document.find(START)
    end = document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {START} ... {END} block")
    return document[: start + len(START)] + "\n" + reference + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README", help="Replace the reference in this file.")
    group.add_argument(
        "--check", type=Path, metavar="README", help="Exit 1 if this file's reference is stale."
    )
    args = parser.parse_args(argv)
    reference = render()
    if args.write is not None:
        path: Path = args.write
        path.write_text(splice(path.read_text(encoding="utf-8"), reference), encoding="utf-8")
        return 0
    if args.check is not None:
        current = args.check.read_text(encoding="utf-8")
        if splice(current, reference) != current:
            print(f"{args.check}: the configuration reference is stale; run with --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
