"""HTTP API plumbing shared by every app: the error envelope and its one renderer, pagination, parsers,
input serializers and OpenAPI helpers."""
