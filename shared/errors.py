"""The relay's one error hierarchy.

Like dramatiq's, it splits at the top into errors worth retrying (`TransientError`) and errors that
will fail again however often they are retried (`PermanentError`).
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class TransientError(RelayError):
    """May succeed when tried again later: a broker, store or platform that is away for now."""


class PermanentError(RelayError):
    """Will fail again on retry: bad input, bad configuration, a platform's final refusal."""


class ConfigError(PermanentError):
    """The configuration is wrong; the message is one line that names the key."""


class ValidationFailed(PermanentError):
    """A submitted message is not acceptable; `errors` names each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class EnvelopeError(PermanentError):
    """A message on the wire is not a job or event of a version this code reads."""


class BrokerUnavailable(TransientError):
    """RabbitMQ cannot be reached or did not confirm in time."""


class PublishRefused(TransientError):
    """RabbitMQ returned or nacked a publish (no queue bound, queue full)."""


class StoreUnavailable(TransientError):
    """The store cannot be reached."""


class NotFound(PermanentError):
    """The thing asked for does not exist (or belongs to someone else)."""
