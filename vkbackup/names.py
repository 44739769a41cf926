"""Names are data, never code: Docker's and PostgreSQL's own name rules, checked
where a name enters vkbackup.

Why. Container, volume, image, compose project and service, database and role
names reach `docker`, `docker compose`, `psql`, `pg_dump`, `dropdb` and bash
scripts on a host. They come from three places nobody here controls fully: the
config file, what `init` discovers on a host (chosen by whoever runs containers
there), and a manifest's private part (written by an earlier snapshot, read back
from storage). Quoting keeps a name from becoming shell syntax, but not from
becoming an *option*: `docker exec -rf ...`, `dropdb --if-exists
--maintenance-db=...`, a `docker compose up` service called `--remove-orphans`,
or a database name that libpq reads as a whole connection string
(`host=evil dbname=x`). So each name is also checked, once, where it enters,
against the rule of the program that owns it: a name those programs would never
have created is refused before any command is built from it.

The rules (each function below cites its own):

* container (moby `daemon/names`, `RestrictedNameChars` /
  `RestrictedNamePattern`): ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``, so at least two
  characters, ASCII only, never starting with '-', '.' or '_'. moby sets no
  length limit; vkbackup takes at most 255 characters.
* volume (moby local volume driver, ``volumeNameRegex``): the same pattern; at
  most 255 characters (the driver makes a directory of the name: NAME_MAX).
* image (distribution/reference grammar, as `docker pull` parses it):
  ``[domain[:port]/]path[:tag][@digest]``; path components lowercase
  ``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or runs of ``-``; domain
  components ``[a-zA-Z0-9]`` with inner dashes, or a bracketed IPv6 address;
  tag ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; digest ``algorithm:hex`` with at
  least 32 hex digits; the name part at most 255 characters. An image ID
  (``sha256:<hex>`` or a bare hex prefix) parses under the same grammar.
* compose project (compose-spec, "name" top-level element; Compose v2):
  lowercase letters, digits, '-' and '_', starting with a letter or digit.
* compose service (compose-spec schema, ``services`` patternProperties
  ``^[a-zA-Z0-9._-]+$``), narrowed here to start with a letter or digit: a
  service name is an argument of `docker compose up`, where a leading '-' is an
  option and '.' / '..' read as paths.
* PostgreSQL database and role (PostgreSQL "Identifiers and Key Words";
  libpq "Connection Strings"): the server takes any name but NUL, and uses at
  most NAMEDATALEN-1 = 63 bytes of it (longer names are silently truncated, so
  they would name a different object). vkbackup is stricter, to what real
  databases are called (``chatwoot_production``, ``my-app``, ``App.v2``):
  ASCII letters, digits, '_', '.', '-', starting with a letter, digit or '_',
  at most 63 bytes. That rules out a leading '-' (an option to `pg_dump`,
  `dropdb`), '=' and ``postgresql://`` (libpq expands such a dbname as a
  connection string), whitespace, quotes, '$', control characters and NUL, and
  non-ASCII letters: PostgreSQL allows them, but a lookalike (Cyrillic U+0430
  for the Latin 'a' of "chatwoot") names a different database that prints the
  same.

Every check returns the name unchanged or raises the caller's error class
(ConfigError for a config file, IntegrityError for a manifest) with *where*
(file and key path, host, manifest field) and the name, shown escaped (every
non-ASCII or control character as its code, then `textsafe.printable`) and
shortened, so a hostile name cannot steer the terminal that prints the error or
pass for another. The functions are pure.
"""

from __future__ import annotations

import re

from vkbackup.errors import ConfigError, VkError
from vkbackup.textsafe import printable

#: moby's RestrictedNameChars, one character then one or more (so two at least)
DOCKER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", re.ASCII)
DOCKER_NAME_MAX = 255

PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*", re.ASCII)
SERVICE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*", re.ASCII)

PG_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)
PG_NAME_MAX_BYTES = 63  # NAMEDATALEN - 1

# distribution/reference grammar, written out with ASCII classes (Go's \w is ASCII)
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST_ALGO = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_DIGEST = rf"{_DIGEST_ALGO}:[0-9a-fA-F]{{32,}}"
IMAGE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::{_TAG})?(?:@{_DIGEST})?",
    re.ASCII,
)
IMAGE_NAME_MAX = 255  # distribution's NameTotalLengthMax
_IMAGE_MAX = 1024  # a whole reference: name, tag and a sha512 digest fit easily

_SHOWN = 80  # characters of a bad name shown in an error


def shown(name: str) -> str:
    """Given a name from outside, return it quoted for an error message: control
    and bidi characters, and any non-ASCII one (every rule here is ASCII, so a
    lookalike letter is shown as the code point it is), as visible escapes, and
    a very long name cut short."""
    cut = name if len(name) <= _SHOWN else name[:_SHOWN]
    text = printable(ascii(cut))
    return text if cut is name else f"{text}... ({len(name)} characters)"


def _refuse(kind: str, name: str, where: str, rule: str, error: type[VkError]) -> VkError:
    return error(f"{where}: not a valid {kind}: {shown(name)} ({rule})")


def _docker_name(kind: str, name: str, where: str, error: type[VkError]) -> str:
    if len(name) > DOCKER_NAME_MAX:
        raise _refuse(kind, name, where, f"at most {DOCKER_NAME_MAX} characters", error)
    if not DOCKER_NAME_RE.fullmatch(name):
        raise _refuse(
            kind,
            name,
            where,
            "Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]+: two characters at least, "
            "starting with a letter or digit",
            error,
        )
    return name


def check_container(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a container name and where it came from, return it. Raise *error* if
    Docker would not have created a container of that name (moby daemon/names:
    [a-zA-Z0-9][a-zA-Z0-9_.-]+) or it is longer than 255 characters."""
    return _docker_name("Docker container name", name, where, error)


def check_volume(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a volume name and where it came from, return it. Raise *error* if
    Docker's local volume driver would refuse it ([a-zA-Z0-9][a-zA-Z0-9_.-]+,
    at most 255 characters: it is a directory name)."""
    return _docker_name("Docker volume name", name, where, error)


def check_image(ref: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given an image reference and where it came from, return it. Raise *error*
    unless it follows the distribution/reference grammar
    ([domain[:port]/]path[:tag][@digest], lowercase path, name part at most 255
    characters)."""
    kind = "Docker image reference"
    if len(ref) > _IMAGE_MAX:
        raise _refuse(kind, ref, where, f"at most {_IMAGE_MAX} characters", error)
    m = IMAGE_RE.fullmatch(ref)
    if m is None:
        raise _refuse(
            kind,
            ref,
            where,
            "expected [registry[:port]/]path[:tag][@digest]: a lowercase path, a tag of "
            "letters, digits, '_', '.' and '-' not starting with '.' or '-'",
            error,
        )
    if len(m.group("name")) > IMAGE_NAME_MAX:
        raise _refuse(kind, ref, where, f"the name is at most {IMAGE_NAME_MAX} characters", error)
    return ref


def check_project(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a compose project name and where it came from, return it. Raise
    *error* unless it is lowercase letters, digits, '-' and '_', starting with a
    letter or digit (compose-spec), at most 255 characters."""
    if len(name) > DOCKER_NAME_MAX or not PROJECT_RE.fullmatch(name):
        raise _refuse(
            "compose project name",
            name,
            where,
            "Compose allows lowercase letters, digits, '-' and '_', starting with a letter "
            "or digit",
            error,
        )
    return name


def check_service(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a compose service name and where it came from, return it. Raise
    *error* unless it is letters, digits, '.', '_' and '-' (compose-spec schema),
    starting with a letter or digit, at most 255 characters."""
    if len(name) > DOCKER_NAME_MAX or not SERVICE_RE.fullmatch(name):
        raise _refuse(
            "compose service name",
            name,
            where,
            "Compose allows letters, digits, '.', '_' and '-'; vkbackup also wants a "
            "letter or digit first",
            error,
        )
    return name


def _pg_name(kind: str, name: str, where: str, error: type[VkError]) -> str:
    if not PG_NAME_RE.fullmatch(name):
        raise _refuse(
            kind,
            name,
            where,
            "vkbackup takes ASCII letters, digits, '_', '.' and '-', starting with a "
            "letter, digit or '_'",
            error,
        )
    if len(name.encode()) > PG_NAME_MAX_BYTES:
        raise _refuse(
            kind,
            name,
            where,
            f"PostgreSQL uses at most {PG_NAME_MAX_BYTES} bytes of a name (NAMEDATALEN-1)",
            error,
        )
    return name


def check_database(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a PostgreSQL database name and where it came from, return it. Raise
    *error* unless it is ASCII letters, digits, '_', '.' and '-', starting with a
    letter, digit or '_', at most 63 bytes (see the module docstring)."""
    return _pg_name("PostgreSQL database name", name, where, error)


def check_role(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a PostgreSQL role (user) name and where it came from, return it.
    Raise *error* under the same rule as `check_database`."""
    return _pg_name("PostgreSQL role name", name, where, error)


def check_table(name: str, where: str, error: type[VkError] = ConfigError) -> str:
    """Given a PostgreSQL table or schema name and where it came from, return it.
    Raise *error* under the same rule as `check_database`."""
    return _pg_name("PostgreSQL table or schema name", name, where, error)
