"""Operator controls: switches set from the admin, stored in the database, obeyed by every worker.

Each process keeps the switches in memory and refreshes them every second from whichever database
node answers (the primary, or a replica while the primary is down), so every worker obeys a change
within about a second and keeps obeying the last known switches when the database is unreachable.
"""
