"""age v1 encryption, streaming (https://age-encryption.org/v1, C2SP age).

Any object vkbackup writes opens with the stock `age` tool, and vkbackup opens
what `age` writes: the break-glass restore must never depend on vkbackup
itself. So the format is implemented to the letter of the C2SP spec and
checked against stock age and the C2SP/CCTV vectors, and this package knows
nothing of backups.

Keys come in two public kinds, mixed freely in recipient lists and identity
files: X25519 ("age1...") and the hybrid post-quantum ML-KEM-768 + X25519
kind of age 1.3 ("age1pq1...", opened by stock age 1.3.0 and later), for
backups that must stay closed after X25519 falls. Passphrases (age -p) serve
identity files. Every failure raises `vkbackup.errors.CryptoError` naming
the object at fault, and no key material is ever printed or logged.

Modules: bech32 (key encoding), header (stanzas, MAC), armor (PEM armor),
hpke (the hybrid KEM and the HPKE suite of PQ stanzas), recipients (key
types), age (the streaming readers), keys (identity files, passphrases).
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
    AnyIdentity,
    AnyRecipient,
    HybridIdentity,
    HybridRecipient,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    generate_hybrid_identity,
    generate_identity,
    parse_identity,
    parse_recipient,
)

__all__ = [
    "CHUNK_SIZE",
    "AnyIdentity",
    "AnyRecipient",
    "DecryptingReader",
    "EncryptingReader",
    "HybridIdentity",
    "HybridRecipient",
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
    "generate_hybrid_identity",
    "generate_identity",
    "load_identity_file",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "read_passphrase",
    "write_identity_file",
]
