"""Authentication: JWT issue, verification and revocation with a ring of signing keys.

Keys come from the environment (``JWT_SECRET``, ``JWT_SECRET_PREV``) and from the database (``rotate_jwt_key``,
the admin); tokens carry the ``kid`` of their key and are verified by that key alone (``backend.py``), from a
ring each process keeps in memory (``ring.py``). A refused token is a 401 ``token_not_valid`` with a one-word
``reason`` and nothing an attacker could use.
"""
