"""The README's configuration reference is the one the settings generate, and every name in it works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ops import config_reference
from shared.settings import Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"

# A value different from each default, as an environment variable would carry it.
SAMPLE_VALUES: dict[str, str] = {
    "str": "changed",
    "int": "7",
    "float": "3.5",
    "bool": "false",
    "list": "[2, 4]",
    "dict": '{"a": 3}',
}


def test_readme_holds_the_generated_reference() -> None:
    text = README.read_text(encoding="utf-8")
    assert config_reference.START in text and config_reference.END in text
    assert config_reference.splice(text, config_reference.render()) == text, (
        "README.md's configuration reference is stale: run `python -m ops.config_reference --write README.md`"
    )


def test_every_setting_is_in_the_reference() -> None:
    keys = {entry.key for entry in config_reference.entries()}
    expected = set()
    for section, info in Settings.model_fields.items():
        if section == "sites":
            from shared.settings import SiteSettings

            expected |= {f"sites.<name>.{f.alias or n}" for n, f in SiteSettings.model_fields.items()}
        else:
            model = info.annotation
            expected |= {f"{section}.{f.alias or n}" for n, f in model.model_fields.items()}  # type: ignore[union-attr]
    assert keys == expected


def _sample(key: str, default: str) -> str | None:
    """A value for the key that differs from its default and passes validation, or None to skip it."""
    special = {
        "sites.<name>.port": "2775",
        "sites.<name>.max_segments": "5",
        "sites.<name>.long_messages": "message-payload",
        "ingress.blocked_number_types": '["voip"]',
        "ingress.peer_spool_paths": '["/var/lib/relay-b/spool.db"]',
        "callbacks.allow_networks": '["127.0.0.0/8", "::1/128"]',
        "sites.<name>.report_secret": "a-report-secret-of-24ch",
    }
    if key in special:
        return special[key]
    if key.endswith(".url"):
        return "amqp://u:p@example:5672/" if key.startswith("broker") else "http://example:1/x"
    if key.endswith(("_url", ".primary", ".level", ".platform", ".policy", ".default_region")):
        return {
            "routing.primary": "a",
            "log.level": "DEBUG",
            "sites.<name>.platform": "kannel",
            "routing.policy": "primary",
            "ingress.default_region": "DE",
        }.get(key, "http://example:2")
    if default.startswith("["):
        return SAMPLE_VALUES["list"]
    if default.startswith("{"):
        return SAMPLE_VALUES["dict"]
    if default in ("true", "false"):
        return "false" if default == "true" else "true"
    if default.startswith('"') or default == "(none)":
        return "changed"
    if "." in default:
        return "3.5"
    if default.isdigit():
        return str(int(default) + 1)
    return None


def _resolve(settings: Settings, key: str) -> object:
    node: object = settings
    for part in key.replace("<name>", "a").split("."):
        if isinstance(node, dict):
            node = node[part]
        else:
            node = getattr(node, "json_output" if part == "json" else part)
    return node


@pytest.mark.parametrize("entry", config_reference.entries(), ids=lambda e: e.key)
def test_each_environment_variable_sets_its_key(entry: config_reference.Entry, monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    # No site is configured by default; site keys and routing name a site a that gives its url only.
    monkeypatch.setenv("RELAY_SITES__A__URL", "http://127.0.0.1:9001/v1.0/message")
    default = _resolve(load_settings(), entry.key)
    value = _sample(entry.key, entry.default)
    assert value is not None, f"no sample value for {entry.key}"
    monkeypatch.setenv(entry.env.replace("<NAME>", "A"), value)
    changed = _resolve(load_settings(), entry.key)
    assert changed != default
    if isinstance(changed, list) and changed and isinstance(changed[0], Path):
        assert [str(p) for p in changed] == json.loads(value)
    elif isinstance(changed, bool | int | float | list | dict):
        assert changed == json.loads(value)
    else:
        assert str(getattr(changed, "value", changed)) == value
