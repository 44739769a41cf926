"""age v1 encryption, streaming (https://age-encryption.org/v1, C2SP age).

Any object vkbackup writes opens with the stock `age` tool, and vkbackup opens
what `age` writes. This package knows nothing of backups.

Public interface:
    X25519Recipient, X25519Identity      public / secret X25519 keys
    ScryptRecipient, ScryptIdentity      passphrase encryption (age -p)
    Recipient, Identity                  the protocols the readers accept
    generate_identity() -> X25519Identity
    parse_recipient("age1...") -> X25519Recipient
    parse_identity("AGE-SECRET-KEY-1...") -> X25519Identity
    load_identity_file(path, passphrase=None) -> list[Identity]
    write_identity_file(path, identity, passphrase=None) -> None
    format_identity_file(identity) -> str
    default_identity_path(environ=None, passphrase=False) -> Path
    read_passphrase(passphrase_file=None, ...) -> str;  PassphraseSource(...)
    EncryptingReader(src, recipients) -> Readable of the age file
    DecryptingReader(src, identities, name="<stdin>") -> Readable of plaintext
    encrypt_bytes(data, recipients) -> bytes
    decrypt_bytes(data, identities, name="<bytes>") -> bytes

Every failure raises `vkbackup.errors.CryptoError` naming the object at fault.
Modules: bech32 (key encoding), header (stanzas, MAC), armor (PEM armor),
recipients (key types), age (the readers), keys (identity files, passphrases).
"""

from __future__ import annotations

from vkbackup.crypto.age import (
    CHUNK_SIZE,
    DecryptingReader,
    EncryptingReader,
    decrypt_bytes,
    encrypt_bytes,
)
from vkbackup.crypto.keys import (
    PassphraseSource,
    default_identity_path,
    format_identity_file,
    load_identity_file,
    parse_identities,
    read_passphrase,
    write_identity_file,
)
from vkbackup.crypto.recipients import (
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    generate_identity,
    parse_identity,
    parse_recipient,
)

__all__ = [
    "CHUNK_SIZE",
    "DecryptingReader",
    "EncryptingReader",
    "Identity",
    "PassphraseSource",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_bytes",
    "default_identity_path",
    "encrypt_bytes",
    "format_identity_file",
    "generate_identity",
    "load_identity_file",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "read_passphrase",
    "write_identity_file",
]
