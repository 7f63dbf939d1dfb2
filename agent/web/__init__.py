"""The agent's status page, `/metrics` (Prometheus) and health endpoints, over plain HTTP/1.1.

Modules: `config` (the `[web]` section), `state` (the figures the page shows, as JSON-ready
data), `health` (readiness), `metrics` (the Prometheus collector), `verdicts` (the inspections'
latency histograms and latest rejects), `images` (the one route that reads files: saved images
of rejects), `server` (the asyncio HTTP server and its routes), `static/` (the page: no build
step, nothing fetched from elsewhere).
Only `config` is imported by the config loader; the rest loads when the agent serves.
"""
