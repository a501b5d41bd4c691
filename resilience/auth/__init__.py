"""Authentication: JWT issue, verification and revocation.

This version signs with the one key from ``JWT_SECRET`` (simplejwt). Verification needs no
database round trip except the user lookup; a refused token is a 401 ``token_not_valid``
with a one-word ``reason`` and nothing an attacker could use.
"""
