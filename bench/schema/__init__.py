"""Schemathesis against the running API: the schema states what the API enforces (docs/schema_conformance.md)."""
