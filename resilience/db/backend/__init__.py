"""PostgreSQL backend that knows which node it talks to (``ENGINE = "resilience.db.backend"``)."""
