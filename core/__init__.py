"""Neither shop nor resilience: the error hierarchy and its one renderer, the API plumbing, request ids.

``core`` imports neither ``shop`` nor ``resilience`` (import-linter checks it in ``make lint``).
"""
