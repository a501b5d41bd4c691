"""Health endpoints. ``/health/live`` touches no dependency: it answers while the process can serve."""
