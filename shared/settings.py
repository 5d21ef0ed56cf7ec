"""Every setting of the relay, read in one place.

Sources, strongest first: environment variables ``RELAY_<SECTION>__<KEY>``, the TOML file given by
``--config`` or ``RELAY_CONFIG``, then the defaults below.

File paths (the SQLite store, the spool): a relative path written in the TOML file is taken from the
file's own folder, one given in the environment from the current directory; the defaults lie in the data
directory (`data_dir()`), so every command finds the same store whatever folder it runs in.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.broker_settings import BrokerSettings
from shared.callback_settings import CallbackSettings
from shared.config_file import (
    ConfigFileSource,
    config_file,
    default_spool_path,
    default_store_url,
)
from shared.errors import ConfigError
from shared.guard_settings import GuardSettings, NumberType

SITE_NAME_MAX_CHARS = 64  # the width of the store's site columns


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlatformKind(StrEnum):
    HTTP_JSON = "http-json"
    KANNEL = "kannel"
    JASMIN = "jasmin"
    SMPP = "smpp"


HTTP_PLATFORMS = frozenset({PlatformKind.HTTP_JSON, PlatformKind.KANNEL, PlatformKind.JASMIN})
# Most segments a site carries whole unless `sites.<name>.max_segments` says otherwise, as the programs
# behave out of the box: Kannel's sendsms-user sends one part (`max-messages = 1`) and does not concatenate,
# Jasmin cuts a text at `long_content_max_parts = 5`. Other kinds carry `ingress.max_segments`.
DEFAULT_MAX_SEGMENTS = {PlatformKind.KANNEL: 1, PlatformKind.JASMIN: 5}


class LongMessages(StrEnum):
    """How an smpp site sends a text longer than one segment."""

    UDH = "udh"  # one submit_sm per segment, joined by a concatenation user data header
    MESSAGE_PAYLOAD = "message-payload"  # one submit_sm, the whole text in the message_payload option


class RoutingPolicy(StrEnum):
    ROUND_ROBIN = "round-robin"
    PRIMARY = "primary"


class StoreSettings(_Section):
    url: str = Field(
        default_factory=default_store_url,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///FILE or postgresql+asyncpg://...",
    )
    batch_max: int = Field(500, ge=1, description="Most rows one group commit writes.")


class IngressSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API (0: any free port).")
    processes: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    spool_path: Path = Field(
        default_factory=default_spool_path,
        description="Local SQLite file that keeps submits the broker did not confirm.",
    )
    peer_spool_paths: list[Path] = Field(
        default_factory=list,
        description="The `spool_path` of other ingress replicas whose files this one can read (on this "
        "machine or a shared volume): it drains a peer's spool files whenever no live process holds their "
        "lock, as it drains its own siblings.",
    )
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")
    max_segments: int = Field(10, ge=1, le=255, description="Most SMS segments one message may take.")
    max_batch: int = Field(1000, ge=1, le=10_000, description="Most messages in one batch submit.")
    bundle_max: int = Field(
        50,
        ge=1,
        le=1000,
        description="Most jobs one broker message carries (concurrent submits for a site share one); "
        "likewise delivery reports (concurrent reports share one).",
    )
    default_validity_s: int = Field(86_400, ge=1, description="Validity of a message that names none.")
    max_validity_s: int = Field(7 * 86_400, ge=1, description="Longest validity a client may ask for.")
    idempotency_ttl_s: int = Field(86_400, ge=1, description="How long an Idempotency-Key is remembered.")
    idempotency_lease_s: float = Field(
        8.0,
        gt=0,
        description="How long an Idempotency-Key claim outlives its request's last sign of life: the "
        "process renews it while the request runs, and a repeat of a request whose process died takes it "
        "over this long after the last renewal, publishing under the same message ids. A repeat waits up "
        "to 10 s for the first answer or the takeover: with a lease shorter than that it is answered, not "
        "refused.",
    )
    default_region: str = Field("NL", description="Region for numbers given without a country code.")
    recorder: bool = Field(True, description="Fold worker events and dead letters into the store.")
    public_url: str | None = Field(
        None,
        description="Base URL platforms reach the ingress at, for their delivery reports "
        '(default: "http://<ingress.host>:<ingress.port>").',
    )
    store_wait_s: float = Field(
        1.0,
        gt=0,
        description="How long a submit waits for its store row before it answers without it "
        "(the row is written later).",
    )
    detour_after_s: float = Field(
        30.0,
        gt=0,
        description="How long a site's queue may refuse (nack) a spooled message before the message is "
        "forwarded to another site's queue instead.",
    )
    blocked_number_types: list[NumberType] = Field(
        default_factory=lambda: [
            NumberType.PREMIUM_RATE,
            NumberType.SHARED_COST,
            NumberType.TOLL_FREE,
            NumberType.UAN,
            NumberType.VOICEMAIL,
            NumberType.PAGER,
        ],
        description="Number types a submit refuses (422): any of " + ", ".join(NumberType) + ".",
    )


class RoutingSettings(_Section):
    policy: RoutingPolicy = Field(RoutingPolicy.ROUND_ROBIN, description='"round-robin" or "primary".')
    primary: str | None = Field(None, description='Site that takes all traffic under "primary".')
    weights: dict[str, int] = Field(
        default_factory=dict, description="Share of traffic per site under round-robin (default 1 each)."
    )


class SiteSettings(_Section):
    platform: PlatformKind = Field(
        PlatformKind.HTTP_JSON, description='"http-json", "kannel", "jasmin" or "smpp".'
    )
    url: str = Field(
        "", description="Submit endpoint of the site's platform (HTTP platforms; smpp has none)."
    )
    username: str | None = Field(None, description="Platform user (Kannel, Jasmin).")
    password: str | None = Field(None, description="Platform password (Kannel, Jasmin, SMPP).")
    token: str | None = Field(None, description="Bearer token for http-json platforms.")
    timeout_s: float = Field(
        5.0,
        gt=0,
        description="Timeout of one platform request (for SMPP: of a bind and of a submit_sm_resp).",
    )
    batch_size: int = Field(
        1, ge=1, le=100, description="Messages per platform request (http-json takes up to 100)."
    )
    max_segments: int | None = Field(
        None,
        ge=1,
        le=255,
        description="Most segments one message may take at this site; a longer one goes to a site that "
        "carries it whole (default: 1 for kannel, 5 for jasmin, else ingress.max_segments).",
    )
    host: str | None = Field(None, description="SMSC address (SMPP).")
    port: int | None = Field(None, ge=1, le=65535, description="SMSC port (SMPP).")
    system_id: str | None = Field(None, max_length=15, description="system_id of the bind (SMPP).")
    system_type: str = Field("", max_length=12, description="system_type of the bind (SMPP).")
    window: int = Field(10, ge=1, le=1000, description="Most submit_sm awaiting their response (SMPP).")
    enquire_link_interval_s: float = Field(
        30.0, gt=0, description="Idle time after which the session is checked with enquire_link (SMPP)."
    )
    report_secret: str | None = Field(
        None,
        min_length=16,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Secret in the URL this site's platform sends delivery reports to; unset: the site "
        "asks its platform for no reports (README: Delivery reports).",
    )
    long_messages: LongMessages = Field(
        LongMessages.UDH,
        description='Long texts over SMPP: "udh" (a submit_sm per segment) or "message-payload" (one).',
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _endpoint_of_kind(self) -> SiteSettings:
        if self.platform is PlatformKind.SMPP:
            missing = [key for key in ("host", "port", "system_id", "password") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"an smpp site needs {', '.join(missing)}")
            if self.url:
                raise ValueError("an smpp site has no url (host and port name the SMSC)")
        elif not self.url:
            raise ValueError(f"a {self.platform.value} site needs a url")
        return self

    @property
    def endpoint(self) -> str:
        """Where the platform is, for logs and messages."""
        return self.url or f"smpp://{self.host}:{self.port}"


class WorkerSettings(_Section):
    concurrency: int = Field(64, ge=1, le=4096, description="Platform requests one worker runs at once.")
    standby_prefetch_count: int = Field(
        0, ge=0, description="Prefetch on other sites' queues (0: same as concurrency)."
    )
    metrics_port: int = Field(9100, ge=0, le=65535, description="Prometheus port of a worker (0: none).")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="How often a worker reports its state.")
    breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive unavailable/ambiguous outcomes that open the breaker."
    )
    breaker_cooldown_s: float = Field(2.0, gt=0, description="Open time before the half-open probe.")
    attempts_per_site: int = Field(3, ge=1, description="Attempts at one site before switching site.")
    max_attempts: int = Field(12, ge=1, description="Attempts in all before a message is dead.")
    retry_delays_s: list[int] = Field(
        default_factory=lambda: [1, 5, 30, 300],
        description="Delay tiers of retries; one delay queue each.",
    )
    grace_s: float = Field(10.0, gt=0, description="Time SIGTERM gives in-flight work.")
    confirm_timeout_s: float = Field(
        15.0,
        gt=0,
        description="How long a worker waits for the confirm of a retry, hand-over, event or dead letter "
        "before it hands the job back.",
    )


class LogSettings(_Section):
    level: str = Field("INFO", description="Log level.")
    json_output: bool = Field(True, alias="json", description="JSON lines (true) or console text.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAY_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    # No default site: a site is a real platform somewhere (`relay up` runs simulated ones when none is).
    sites: dict[str, SiteSettings] = Field(default_factory=dict)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: dict[str, SiteSettings]) -> dict[str, SiteSettings]:
        # No site at all is valid here: the commands that need one say so (the ingress, a worker).
        for name in value:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"site name {name!r} may hold only letters, digits, '-' and '_'")
            if len(name) > SITE_NAME_MAX_CHARS:
                raise ValueError(f"site name {name!r} is longer than {SITE_NAME_MAX_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _routing_names_known_sites(self) -> Settings:
        known = set(self.sites)
        if self.routing.primary is not None and self.routing.primary not in known:
            raise ValueError(f"routing.primary names unknown site {self.routing.primary!r}")
        unknown = set(self.routing.weights) - known
        if unknown:
            raise ValueError(f"routing.weights names unknown sites {sorted(unknown)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(ConfigFileSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def site_names(self) -> list[str]:
        return sorted(self.sites)

    @property
    def segment_limits(self) -> dict[str, int]:
        """Most segments each site carries whole: its own `max_segments` (else its platform's default),
        never above the ingress's."""
        cap = self.ingress.max_segments
        return {
            name: min(site.max_segments or DEFAULT_MAX_SEGMENTS.get(site.platform, cap), cap)
            for name, site in self.sites.items()
        }


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, or raise `ConfigError` with one line that names the bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_error_line(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read configuration: {exc}") from None


def _first_error_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "settings"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(parts)
