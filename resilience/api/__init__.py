"""HTTP API plumbing shared by every app: the error envelope and its single renderer."""
