"""The service layer, between the routes (api/) and persistence (db/) and computation (analysis/):
what a request does — access checks, submit, cancel, summaries — independent of HTTP, so the API,
the CLI and the dashboard pages share one implementation. A top-level package rather than api/services
so that non-HTTP callers (optibench admin) need not import FastAPI. The layers: tests/test_layers.py."""
