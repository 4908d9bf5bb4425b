"""The live dashboard: `streamkit dashboard MODULE:APP` and `/` of every worker.

- `graph.py`: the app's graph as JSON (the one place that knows how the graph is declared).
- `collect.py`: the whole-app view, refreshed while someone watches: the group's members and
  their `/status`, lag from the broker, the latest dead letters and late events, hot keys.
- `server.py`: the page, its static assets, `/api/graph`, `/api/snapshot`, `/api/events`
  (server-sent events) and `/api/lookup`.
"""
