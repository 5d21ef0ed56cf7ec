"""Prometheus metrics of the ingress (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SUBMITS = Counter(
    "relay_ingress_submits_total",
    "Messages submitted, by result: queued (broker confirmed), spooled, invalid, unauthorized, duplicate.",
    ["result"],
)
PUBLISH_SECONDS = Histogram(
    "relay_ingress_publish_seconds",
    "Time from publish to broker confirm (or to the spool's fsync when the broker did not confirm).",
    ["target"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SPOOL_BACKLOG = Gauge("relay_ingress_spool_backlog", "Messages in the local spool waiting for the broker.")
SPOOLED = Counter("relay_ingress_spooled_total", "Messages written to the local spool.")
FORWARDED = Counter("relay_ingress_forwarded_total", "Spooled messages the broker has since confirmed.")
DETOURED = Counter(
    "relay_ingress_detoured_total",
    "Spooled messages forwarded to another site's queue because their own site's queue kept refusing them.",
    ["from_site", "to_site"],
)
STORE_WRITES = Counter(
    "relay_ingress_store_writes_total", "Group commits of messages rows, by result (ok, failed).", ["result"]
)
STORE_PENDING_ROWS = Gauge(
    "relay_ingress_store_pending_rows",
    "Messages rows waiting for their group commit (bounded: a submit beyond it waits for room).",
)
STORE_RETRY_ROWS = Gauge(
    "relay_ingress_store_retry_rows",
    "Messages rows kept to be written again (store away, or no room in time).",
)
STORE_ROWS_REFUSED = Counter(
    "relay_ingress_store_rows_refused_total",
    "Messages rows the store refused as sent, by what was written instead: fitted (values cut to fit "
    "their columns) or dropped (nothing could be written; the recorder makes the row from the job).",
    ["result"],
)
STORE_BATCH_ROWS = Histogram(
    "relay_ingress_store_batch_rows",
    "Rows per group commit of the messages table.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BUNDLE_JOBS = Histogram(
    "relay_ingress_bundle_jobs",
    "Jobs per message published to a site queue (concurrent submits for a site share one).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
RECORDER_BATCHES = Counter(
    "relay_ingress_recorder_batches_total",
    "Batches the recorder folded into the store, by result.",
    ["result"],
)
RECORDER_RECORDS = Counter(
    "relay_ingress_recorder_records_total",
    "Reports the recorder folded, by kind (attempt, dead), and callbacks it published (callback).",
    ["kind"],
)
RECORDER_MALFORMED = Counter(
    "relay_ingress_recorder_malformed_total", "Reports the recorder could not read (logged and dropped)."
)
RECORDER_REFUSED = Counter(
    "relay_ingress_recorder_refused_total",
    "Reports the store refused as sent, by queue and what was done: fitted (stored with values cut to "
    "fit) or kept (left in their queue to be tried again).",
    ["kind", "result"],
)
POSSIBLE_DUPLICATES = Counter(
    "relay_ingress_ambiguous_attempts_total", "Ambiguous attempts reported by workers (possible duplicates)."
)
REPORT_BUNDLE = Histogram(
    "relay_ingress_report_bundle_reports",
    "Delivery reports per message published to the reports queue (concurrent reports share one).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
REPORT_REQUESTS = Counter(
    "relay_ingress_report_requests_total",
    "Delivery reports platforms sent to the report endpoint, by platform and result: queued (the broker "
    "confirmed it; answered), forged (unknown site, wrong secret or wrong platform; refused), malformed "
    "(refused), spooled (no confirm: fsynced in the spool, answered, forwarded later), unavailable (neither "
    "confirmed nor spooled; answered 503, the platform sends it again).",
    ["platform", "result"],
)
REPORTS_FOLDED = Counter(
    "relay_ingress_reports_folded_total",
    "Delivery reports the recorder folded, by result: stored, repeated (the same report again: counted, "
    "not applied twice), unmatched (kept, naming no message the store knew).",
    ["result"],
)
