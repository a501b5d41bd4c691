"""Bulwark's resilience layer: everything that removes a single point of failure.

It never imports ``shop``; the shop uses it.
"""
