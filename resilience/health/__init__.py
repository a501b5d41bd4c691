"""Health: the eight SPOF areas (one check beside each area's code), the /health endpoints, worker snapshots."""
