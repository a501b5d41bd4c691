"""Key material: generation with ``secrets``/``cryptography``, and encryption at rest.

Secrets in the database are Fernet tokens (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
derived by HKDF from ``SECRET_KEY``. Decryption also tries every ``SECRET_KEY_FALLBACKS`` entry, so
rotating ``SECRET_KEY`` (old value moved to the fallbacks) loses no signing key; ``rotate_jwt_key
--reencrypt`` then rewrites them under the new key before the fallback is dropped.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

HS_SECRET_BYTES = 48  # RFC 8725 §3.5 / OWASP: at least the HMAC output size (32 bytes for HS256)
_HKDF_INFO = b"bulwark signing-key ring encryption v1"


class KeyDecryptionError(Exception):
    """No current or fallback SECRET_KEY opens this secret (it was encrypted under a key no longer configured)."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _ring_cipher() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(key) for key in keys])


def secret_encrypt(plaintext: bytes) -> str:
    return _ring_cipher().encrypt(plaintext).decode("ascii")


def secret_decrypt(token: str) -> bytes:
    try:
        return _ring_cipher().decrypt(token.encode("ascii"))
    except InvalidToken as exc:
        raise KeyDecryptionError("no configured SECRET_KEY (or fallback) decrypts this signing key") from exc


def secret_reencrypt(token: str) -> str:
    """The same secret under the current ``SECRET_KEY``."""
    try:
        return _ring_cipher().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise KeyDecryptionError("no configured SECRET_KEY (or fallback) decrypts this signing key") from exc


@dataclass(frozen=True)
class NewKeyMaterial:
    private: bytes  # the HS secret, or the Ed25519 private key as PKCS#8 PEM; encrypted before storage
    public_pem: str  # "" for HS256

    def __repr__(self) -> str:  # never show the private part
        return f"NewKeyMaterial(public_pem={bool(self.public_pem)})"


def material_generate(algorithm: str) -> NewKeyMaterial:
    if algorithm == "HS256":
        return NewKeyMaterial(secrets.token_urlsafe(HS_SECRET_BYTES).encode("ascii"), "")
    if algorithm == "EdDSA":
        private = Ed25519PrivateKey.generate()
        return NewKeyMaterial(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii"),
        )
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def private_key_load(algorithm: str, private: bytes) -> bytes | Ed25519PrivateKey:
    """What PyJWT signs with: the HS secret bytes, or the Ed25519 key object."""
    if algorithm == "HS256":
        return private
    key = serialization.load_pem_private_key(private, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("stored EdDSA key is not an Ed25519 private key")
    return key


def public_key_load(public_pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("stored EdDSA public key is not Ed25519")
    return key


def new_kid() -> str:
    """A random database kid: short, URL-safe, no meaning, never derived from the secret."""
    return "db-" + secrets.token_hex(8)
