"""The admin's resilience dashboard at ``/admin/resilience/``: the SPOF scorecard, every live worker's view of
the nodes and dependencies, the signing keys, recent events, and the live controls (HackSoft's custom admin site
pattern: extra views prepended in ``get_urls`` through ``admin_view``)."""
