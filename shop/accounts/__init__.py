"""Customer accounts: registration, log in/out with JWTs, ``me``."""
