"""Time-based one-time codes (RFC 6238, HMAC-SHA1, 6 digits, 30 s): stdlib only.

Sites with key + OTP logins hand users a base32 secret (the one behind the QR code). Given that
secret, unattended runs can answer the server's ``Verification code:`` prompt themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time

from dagster_hpc.errors import ConfigError

# RFC 6238 defaults, which every common authenticator app and pam_google_authenticator use.
TOTP_PERIOD_S = 30
TOTP_DIGITS = 6


def _decode_secret(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").replace("-", "").upper()
    cleaned += "=" * (-len(cleaned) % 8)  # apps often drop the base32 padding
    try:
        key = base64.b32decode(cleaned, casefold=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            "the TOTP secret is not valid base32 (letters A-Z and digits 2-7); "
            "copy the secret shown next to the QR code of your site's OTP enrolment"
        ) from exc
    if not key:
        raise ConfigError("the TOTP secret is empty: set it or drop the TOTP option")
    return key


def validate_secret(secret: str) -> None:
    """Raise ConfigError if ``secret`` cannot produce codes (checked before connecting)."""
    _decode_secret(secret)


def totp_code(
    secret: str, *, at: float | None = None, period: int = TOTP_PERIOD_S, digits: int = TOTP_DIGITS
) -> str:
    """The code for ``secret`` at time ``at`` (default: now), zero-padded to ``digits``."""
    key = _decode_secret(secret)
    counter = int((time.time() if at is None else at) // period)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)
