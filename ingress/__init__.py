"""The ingress: durable HTTP submit, the spool and its forwarder, the recorder, the status API.

Decisions, each with its reason:

- A 2xx means durable: the broker confirmed a persistent, mandatory publish into the site's quorum
  queue, or the message is fsynced in this process's spool (``ingress.spool``) because the broker did
  not confirm within ``broker.confirm_timeout_s`` or is down. While the spool holds a backlog, new
  submits queue behind it, so messages leave in order of arrival.
- The messages row is written at submit by a group commit (``ingress.store_writer``) at the same time as
  the publish. When the store is down a submit is still accepted (its message is durable, which is the
  promise), the row is retried in the background, and until then GET answers 404 for it; the recorder
  writes a missing row from the job every worker report carries. The rows waiting for a commit are
  bounded: a submit beyond the bound waits for room while it waits for its row. Auth needs the store
  only every few seconds per key (a key the store vouched for keeps working while it is away); an
  Idempotency-Key needs it always (503 if not).
- Reports from workers reach the store through the recorder (``ingress.recorder``), one transaction per
  batch, acked after the commit; a status only moves up in rank, by the SQL of the fold itself.
- Several processes (``ingress.processes``): the parent binds the socket and forks; each child claims its
  own spool file with a file lock, and any process drains spool files whose lock is free (dead owners).
- The submit URLs are served by a small ASGI fast path (``ingress.fast_path``); FastAPI serves the rest
  and documents all of it (/docs, /openapi.json).
- Per-message log lines are DEBUG (the messages table is the record of each submit); numbers and bodies
  are masked, and libraries that would log raw AMQP frames or SQL parameters are kept at INFO.
"""
