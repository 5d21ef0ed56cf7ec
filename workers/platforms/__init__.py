"""Platform adapters: one small interface, one module per platform kind."""

from workers.platforms.base import Platform, Result
from workers.platforms.factory import make_platform

__all__ = ["Platform", "Result", "make_platform"]
