"""Secrets at rest: Fernet encryption with a key from BOT_SECRET_KEY or a private key file in the data dir."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from bot.configuration.config import Config, ConfigError
from bot.persistence.sqlite import ensure_private_dir

KEY_FILE = "secret.key"
# A passphrase in BOT_SECRET_KEY is stretched with scrypt; a fixed salt is fine because the
# passphrase itself must be long and random (it is a key, not a person's password).
_PASSPHRASE_SALT = b"bot.secrets.v1"
MIN_PASSPHRASE = 32


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted: the secret key changed since it was saved."""


def mask(secret: str) -> str:
    """Show a secret as its first 3 and last 4 characters (short ones are hidden completely)."""
    if not secret:
        return ""
    if len(secret) < 12:
        return "•" * 8
    return f"{secret[:3]}…{secret[-4:]}"


def _key_from_setting(raw: str) -> bytes:
    raw = raw.strip()
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw.encode()
    except (binascii.Error, ValueError):
        pass
    if len(raw) < MIN_PASSPHRASE:
        raise ConfigError(
            f"BOT_SECRET_KEY must be a Fernet key or a random string of at least {MIN_PASSPHRASE} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    derived = hashlib.scrypt(raw.encode(), salt=_PASSPHRASE_SALT, n=2**14, r=8, p=1, dklen=32)
    return base64.urlsafe_b64encode(derived)


def _key_from_file(path: Path) -> bytes:
    ensure_private_dir(path.parent)
    try:
        # O_EXCL: two processes starting at once must not each write their own key.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(f"{path} does not hold a valid key; restore it from a backup or delete it "
                              "(secrets saved with it will have to be entered again)") from None
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return key


class SecretBox:
    """Encrypts and decrypts short secrets such as the OpenAI key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load(cls, config: Config) -> SecretBox:
        """The box for this server: BOT_SECRET_KEY when set, else data_dir/secret.key (created 0600)."""
        if config.secret_key:
            return cls(_key_from_setting(config.secret_key))
        return cls(_key_from_file(config.data_dir / KEY_FILE))

    def encrypt(self, plaintext: str) -> str:
        """Encrypt to a text token safe to store."""
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Decrypt a stored token; raises SecretUnreadable when the key does not fit."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise SecretUnreadable(
                "The stored OpenAI key cannot be decrypted because the server's secret key changed. "
                "Enter the OpenAI key again on the settings page."
            ) from exc
