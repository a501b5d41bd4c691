"""The database layer with no single point of failure.

- **Routing** (:mod:`.router`): reads go to a healthy, current replica (rotated per request); writes,
  transactions, ``select_for_update`` and reads after a write in the same request go to the primary.
- **Node health** (:mod:`.nodes`, :mod:`.monitor`): each process keeps the state of every node. A
  failure seen by a request opens that node's breaker at once; later requests skip it at no cost; a
  background probe (every second) closes it again and measures replication lag.
- **Replica down** (killed, refusing or hung): reads fall back to the primary; a read-only request that
  met the failure is run again (:mod:`.middleware`), so the client sees no error. Queries on a hung
  node are cut off by a client-side deadline (:mod:`.watchdog`).
- **Primary down**: reads continue on replicas, including reads that would have been pinned to the
  primary (answered with ``X-Data-Stale: true``); writes get ``503 read_only_mode`` with
  ``Retry-After``. Bookkeeping writes on read paths are best-effort (:mod:`.bookkeeping`).
- **Promotion**: with a multi-host ``DATABASE_URL`` and ``target_session_attrs=read-write`` the probe
  finds the new primary and writes resume; a connection on a node that became read-only (SQLSTATE
  25006) is discarded and the request retried once.
- **Read-your-writes** (:mod:`.consistency`): the primary's WAL position after a write travels with
  the client (cookie and ``X-Read-After`` header, and per user); replicas serve that client only once
  they have replayed it.
"""
