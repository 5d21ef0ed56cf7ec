"""The sites `relay up` runs and the platforms it simulates.

A site gets a simulated platform when its platform is on this machine and the relay has a simulator of
its kind: an http-json site gets `relay platform-sim`, an smpp site `relay smsc-sim` (taking binds with the
site's own system_id and password). The simulator listens on the site's own port, its admin API on a free
port (or the documented one of a default site). When the configuration names no site at all, `relay up`
runs two of its own, `a` and `b`, on the documented ports, and hands its children a configuration that
names them.

Every simulated site also gets a report secret of its own, made for this run, so its simulator's delivery
reports come back and messages end `delivered`: in the configuration `relay up` writes for its own sites,
or, for sites of a configuration file that names no secret for them, in its children's environment (the
file stays as its owner wrote it).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ops.harness.deployment import toml_tables
from ops.harness.processes import free_port
from shared.errors import ConfigError
from shared.settings import PlatformKind, Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The sites of a configuration that names none: site -> (platform port, admin port of its simulator).
DEFAULT_SITES: dict[str, tuple[int, int]] = {"a": (9001, 9101), "b": (9002, 9102)}
DEFAULT_ADMIN_PORTS = {site: admin_port for site, (_, admin_port) in DEFAULT_SITES.items()}
GENERATED_CONFIG = "relay.toml"
REPORT_SECRET_BYTES = 24  # 32 URL-safe characters, past the 16 a report secret needs


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedSite:
    site: str
    host: str
    port: int
    admin_port: int
    platform: PlatformKind = PlatformKind.HTTP_JSON
    credentials: tuple[str, str] | None = None  # the system_id and password an SMSC's binds must give

    @property
    def command(self) -> str:
        """The `relay` command that simulates the site's platform."""
        return "smsc-sim" if self.platform is PlatformKind.SMPP else "platform-sim"

    @property
    def options(self) -> tuple[str, ...]:
        """The command's options beyond its addresses."""
        if self.credentials is None:
            return ()
        system_id, password = self.credentials
        return ("--system-id", system_id, "--password", password)

    @property
    def description(self) -> str:
        return "simulated SMSC" if self.platform is PlatformKind.SMPP else "simulated platform"

    @property
    def admin_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.admin_port}"


def default_site_url(site: str) -> str:
    return f"http://127.0.0.1:{DEFAULT_SITES[site][0]}/v1.0/message"


def new_report_secret() -> str:
    return secrets.token_urlsafe(REPORT_SECRET_BYTES)


def with_default_sites(config_file: Path | None, run_dir: Path, *, reports: bool = True) -> Path:
    """A configuration file in `run_dir`: `config_file`'s text (if any), then the default sites' tables,
    each with a report secret of its own unless not `reports`."""
    own = config_file.read_text(encoding="utf-8").rstrip("\n") + "\n\n" if config_file is not None else ""
    tables = toml_tables(
        {
            f"sites.{site}": {"url": default_site_url(site)}
            | ({"report_secret": new_report_secret()} if reports else {})
            for site in DEFAULT_SITES
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / GENERATED_CONFIG
    note = "# Written by `relay up`: the configuration names no site, so it runs simulated ones.\n"
    path.write_text(f"{own}{note}{tables}", encoding="utf-8")
    return path


def simulated_sites(config: Settings, *, admin_ports: Mapping[str, int]) -> list[SimulatedSite]:
    """The sites whose http-json or smpp platform is on this machine, with their simulator's ports: the
    site's own, and `admin_ports[site]` or a free one for its admin API."""
    found = []
    for site in config.site_names:
        site_settings = config.sites[site]
        if site_settings.platform is PlatformKind.SMPP:
            host, port = site_settings.host, site_settings.port
            credentials = (site_settings.system_id or "", site_settings.password or "")
        elif site_settings.platform is PlatformKind.HTTP_JSON:
            platform = urlsplit(site_settings.url)
            host, port, credentials = platform.hostname, platform.port, None
        else:
            continue
        if host not in LOCAL_HOSTS:
            continue
        if port is None:
            raise ConfigError(
                f"sites.{site}.url: a platform on this machine needs an explicit port for `relay up` to "
                "simulate it (or run with --no-sims)"
            )
        found.append(
            SimulatedSite(
                site=site,
                host=host or "127.0.0.1",
                port=port,
                admin_port=admin_ports.get(site) or free_port(),
                platform=site_settings.platform,
                credentials=credentials,
            )
        )
    return found


def report_secrets_env(config: Settings, simulated: list[SimulatedSite]) -> tuple[tuple[str, str], ...]:
    """Environment that gives each simulated site without a report secret one for this run."""
    return tuple(
        (f"RELAY_SITES__{sim.site}__REPORT_SECRET", new_report_secret())
        for sim in simulated
        # The environment's names are read case-insensitively: a site named in capitals cannot be
        # told apart there, and keeps the configuration's word.
        if config.sites[sim.site].report_secret is None and sim.site == sim.site.lower()
    )
