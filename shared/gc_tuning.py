"""Garbage-collector settings for the long-running services (ingress, workers).

A submit or a delivery allocates many short-lived objects, nearly all freed by reference counting;
with the default thresholds the collector still ran full collections over every object the libraries
made at import (SQLAlchemy, pydantic, phonenumbers' metadata), which cost about 7% of the ingress's
CPU under load (profiled with py-spy). Objects alive once the service has started are moved out of the
collector's sight and the youngest generation is collected less often.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20


def freeze_startup_objects() -> None:
    """Call once the service has started: what exists now lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
