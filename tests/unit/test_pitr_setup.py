"""`vkbackup.pitr.setup`: the SCRAM verifier against RFC 7677's vector and a
verifier PostgreSQL made, the password file, the check's output as PostgreSQL
15 prints it, the pg_hba.conf rules (first match decides; `all` is no
replication), the changes printed for each gap, hostile names refused, and
`vkbackup init --pitr` printing the commands through a fake host."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.unit.actions.test_init_names import FakeHost
from vkbackup.errors import ConfigError, TransportError
from vkbackup.pitr.setup import (
    CHECK_SQL,
    Change,
    HbaRule,
    PgSetupState,
    check_pitr,
    finish_command,
    first_matching_rule,
    generate_password,
    hba_line,
    missing_changes,
    parse_check,
    parse_networks,
    read_password_file,
    scram_sha256_verifier,
    write_password_file,
)
from vkbackup.transport.base import Completed

# -- SCRAM ----------------------------------------------------------------------------

# RFC 7677, section 3: user "user", password "pencil"
RFC_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL_NO_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def split_verifier(v: str) -> tuple[int, bytes, bytes, bytes]:
    mech, rest = v.split("$", 1)
    assert mech == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    count, salt = params.split(":")
    stored, server = keys.split(":")
    raw = [base64.b64decode(x, validate=True) for x in (salt, stored, server)]
    return int(count), raw[0], raw[1], raw[2]


def test_verifier_matches_rfc7677_vector() -> None:
    v = scram_sha256_verifier("pencil", base64.b64decode(RFC_SALT), 4096)
    count, salt, stored_key, server_key = split_verifier(v)
    assert count == 4096 and base64.b64encode(salt).decode() == RFC_SALT
    auth = f"{RFC_CLIENT_FIRST_BARE},{RFC_SERVER_FIRST},{RFC_CLIENT_FINAL_NO_PROOF}".encode()
    # the ServerKey gives the RFC's server signature (v=...)
    sig = hmac.new(server_key, auth, hashlib.sha256).digest()
    assert base64.b64encode(sig).decode() == RFC_SERVER_SIGNATURE
    # the StoredKey checks the RFC's client proof, as a server does:
    # ClientKey = proof XOR HMAC(StoredKey, AuthMessage); SHA-256(ClientKey) == StoredKey
    client_sig = hmac.new(stored_key, auth, hashlib.sha256).digest()
    proof = base64.b64decode(RFC_PROOF)
    client_key = bytes(a ^ b for a, b in zip(proof, client_sig, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert v == (
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    )


# what PostgreSQL 15 stored for ALTER ROLE ... PASSWORD 'pencil-for-vkbackup-tests'
PG_PASSWORD = "pencil-for-vkbackup-tests"
PG_VERIFIER = (
    "SCRAM-SHA-256$4096:XOWVFmUeZrR6O/p9Q+gnOg==$"
    "PXtUuI1yOn2eLJfakzkdNWyh3vsnzTR2cdRWwTcqQWE=:"
    "NxxPWfuvJyXsFbCWQMKbnul4S+JEj+uuuuF1vj9QoYk="
)


def test_verifier_is_what_postgresql_stores() -> None:
    salt = base64.b64decode("XOWVFmUeZrR6O/p9Q+gnOg==")
    assert scram_sha256_verifier(PG_PASSWORD, salt, 4096) == PG_VERIFIER


def test_verifier_salt_is_random_and_bad_passwords_are_refused() -> None:
    a, b = scram_sha256_verifier("x" * 10), scram_sha256_verifier("x" * 10)
    assert a != b and len(split_verifier(a)[1]) == 16
    for bad in ("", "pässword"):
        with pytest.raises(ValueError):
            scram_sha256_verifier(bad)


def test_generated_passwords_are_long_ascii() -> None:
    p = generate_password()
    assert len(p) >= 40 and p.isascii() and p.isprintable() and p != generate_password()
    assert shlex.quote(p) == p  # nothing a shell or SASLprep would touch


# -- the password file -------------------------------------------------------------------


def test_password_file_is_0600_from_creation_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pitr-password"
    old = os.umask(0)
    try:
        write_password_file(path, "s3cret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "s3cret\n"
    with pytest.raises(ConfigError, match="already exists") as e:
        write_password_file(path, "other")
    assert str(path) in str(e.value)
    assert read_password_file(path) == "s3cret"
    # a symlink in its place is not followed
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="already exists"):
        write_password_file(link, "x")
    assert not target.exists()


def test_password_file_needs_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "pitr-password"
    with pytest.raises(ConfigError) as e:
        write_password_file(path, "x")
    assert str(path) in str(e.value)


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret\n")
    path.chmod(0o640)
    with pytest.raises(ConfigError) as e:
        read_password_file(path)
    assert str(path) in str(e.value) and "0640" in str(e.value)
    assert e.value.hint == f"chmod 600 {path}"


@pytest.mark.parametrize(
    ("content", "want"),
    [("pw\n", "pw"), ("pw", "pw"), ("pw\n\n", "pw\n"), (" pw \n", " pw ")],
)
def test_password_file_loses_one_trailing_newline(tmp_path: Path, content: str, want: str) -> None:
    path = tmp_path / "pw"
    path.write_text(content)
    path.chmod(0o600)
    assert read_password_file(path) == want


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_password_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "pw"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="empty") as e:
        read_password_file(path)
    assert str(path) in str(e.value)


def test_missing_password_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        read_password_file(tmp_path / "none")
    assert str(tmp_path / "none") in str(e.value)


# -- the check's output ------------------------------------------------------------------

HBA = "/var/lib/postgresql/data/pg_hba.conf"
GW = "172.18.0.1"
C = "chatwoot-postgres-1"


def rule(n: int, typ: str, db: str, user: str, addr: str | None, mask: str | None, method: str,
         error: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"type": typ, "error": error, "address": addr, "netmask": mask, "options": None,
            "database": db.split(","), "user_name": user.split(","), "auth_method": method,
            "line_number": n}  # fmt: skip


# the official image's pg_hba.conf, as PostgreSQL 15 reports it
IMAGE_RULES = [
    rule(2, "local", "all", "all", None, None, "trust"),
    rule(3, "host", "all", "all", "127.0.0.1", "255.255.255.255", "trust"),
    rule(4, "host", "all", "all", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "trust"),
    rule(5, "local", "replication", "all", None, None, "trust"),
    rule(6, "host", "replication", "all", "127.0.0.1", "255.255.255.255", "trust"),
    rule(
        7, "host", "replication", "all", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "trust"
    ),
    rule(9, "host", "all", "all", "all", None, "scram-sha-256"),
]
OUR_RULE = rule(101, "host", "replication", "vkbackup_wal", GW, "255.255.255.255", "scram-sha-256")


def check_output(
    *,
    role: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    settings: dict[str, tuple[str, str]] | None = None,
    **top: Any,
) -> str:
    """CHECK_SQL's output as PostgreSQL 15 printed it for the official image (a
    role NOREPLICATION whose password PostgreSQL set itself), with changes."""
    s = {
        "port": ("5432", "configuration file"),
        "hba_file": (HBA, "override"),
        "wal_level": ("replica", "default"),
        "max_wal_senders": ("10", "default"),
        "listen_addresses": ("*", "configuration file"),
        "max_replication_slots": ("10", "default"),
    } | (settings or {})
    doc = {
        "role": role,
        "version": 150018,
        "settings": {k: {"value": v, "source": src} for k, (v, src) in s.items()},
        "hba_rules": IMAGE_RULES if rules is None else rules,
        "slots_used": 0,
        "slot_exists": False,
        "hba_reload_pending": False,
    } | top
    return json.dumps(doc) + "\n"


def role_of(password: str = PG_PASSWORD, **kw: Any) -> dict[str, Any]:
    verifier = PG_VERIFIER if password == PG_PASSWORD else scram_sha256_verifier(password)
    r = {
        "login": True,
        "scram": True,
        "expired": False,
        "replication": True,
        "scram_params": verifier.split("$")[1],
        "verifier_sha256": hashlib.sha256(verifier.encode()).hexdigest(),
    }
    return r | kw


def ready_state(**kw: Any) -> PgSetupState:
    kw.setdefault("role", role_of())
    kw.setdefault("rules", [*IMAGE_RULES, OUR_RULE])
    return parse_check(check_output(**kw))


def changes_of(state: PgSetupState, **kw: Any) -> list[Change]:
    args: dict[str, Any] = {
        "role": "vkbackup_wal", "gateway": GW, "container": C, "user": "postgres",
        "password": PG_PASSWORD,
    } | kw  # fmt: skip
    return missing_changes(state, **args)


# verbatim from PostgreSQL 15 (only the data directory's path differs)
REAL = (
    '{"role": {"login": true, "scram": true, "expired": false, "replication": false, '
    '"scram_params": "4096:XOWVFmUeZrR6O/p9Q+gnOg==", "verifier_sha256": '
    '"666649b632a46a5a046552819a184c04167791b33e0d0bc4ec5a5e90e34d980b"}, "version": 150018, '
    '"settings": {"port": {"value": "5432", "source": "configuration file"}, "hba_file": '
    '{"value": "/var/lib/postgresql/data/pg_hba.conf", "source": "override"}, "wal_level": '
    '{"value": "replica", "source": "configuration file"}, "max_wal_senders": {"value": "10", '
    '"source": "configuration file"}, "listen_addresses": {"value": "*", "source": '
    '"configuration file"}, "max_replication_slots": {"value": "10", "source": '
    '"configuration file"}}, "hba_rules": [{"type": "local", "error": null, "address": null, '
    '"netmask": null, "options": null, "database": ["all"], "user_name": ["all"], '
    '"auth_method": "trust", "line_number": 2}, {"type": "host", "error": null, "address": '
    '"127.0.0.1", "netmask": "255.255.255.255", "options": null, "database": ["all"], '
    '"user_name": ["all"], "auth_method": "trust", "line_number": 3}, {"type": "host", '
    '"error": null, "address": "::1", "netmask": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", '
    '"options": null, "database": ["all"], "user_name": ["all"], "auth_method": "trust", '
    '"line_number": 4}, {"type": "local", "error": null, "address": null, "netmask": null, '
    '"options": null, "database": ["replication"], "user_name": ["all"], "auth_method": '
    '"trust", "line_number": 5}, {"type": "host", "error": null, "address": "127.0.0.1", '
    '"netmask": "255.255.255.255", "options": null, "database": ["replication"], "user_name": '
    '["all"], "auth_method": "trust", "line_number": 6}, {"type": "host", "error": null, '
    '"address": "::1", "netmask": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "options": null, '
    '"database": ["replication"], "user_name": ["all"], "auth_method": "trust", '
    '"line_number": 7}, {"type": "host", "error": null, "address": "all", "netmask": null, '
    '"options": null, "database": ["all"], "user_name": ["all"], "auth_method": '
    '"scram-sha-256", "line_number": 9}], "slots_used": 0, "slot_exists": false, '
    '"hba_reload_pending": false}\n'
)


def test_parse_check_reads_postgresql_15_output() -> None:
    s = parse_check(REAL)
    assert (s.version, s.wal_level, s.max_wal_senders, s.max_replication_slots) == (
        150018,
        "replica",
        10,
        10,
    )
    assert (s.listen_addresses, s.port, s.hba_file) == ("*", 5432, HBA)
    assert s.sources["hba_file"] == "override"
    assert s.role_exists and s.role_login and s.role_scram and not s.role_replication
    assert s.role_scram_params == "4096:XOWVFmUeZrR6O/p9Q+gnOg=="
    assert s.role_verifier_sha256 == hashlib.sha256(PG_VERIFIER.encode()).hexdigest()
    assert not s.slot_exists and s.slots_used == 0 and not s.hba_reload_pending
    assert len(s.hba_rules) == 7
    assert s.hba_rules[-1] == HbaRule(9, "host", ("all",), ("all",), "all", None, "scram-sha-256")
    # a role NOREPLICATION whose password PostgreSQL set: only REPLICATION is missing (the
    # password matches the server's own verifier), and the image's pg_hba.conf has no line
    changes = changes_of(s)
    assert [c.what for c in changes] == [
        "role vkbackup_wal: no REPLICATION",
        f"no pg_hba.conf line lets vkbackup_wal log in for replication from {GW} "
        "(the host: the WAL stream's SSH channel)",
    ]


def test_parse_check_reads_a_missing_role_and_postgresql_16_rules() -> None:
    pg16 = rule(1, "host", "replication", "vkbackup_wal", GW, "255.255.255.255", "reject") | {
        "file_name": "/etc/postgresql/hba.d/10-deny.conf",
        "rule_number": 1,
    }
    s = parse_check(check_output(role=None, rules=[pg16]))
    assert not s.role_exists and not s.role_replication and s.role_scram_params is None
    assert s.hba_rules[0].file_name == "/etc/postgresql/hba.d/10-deny.conf"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "psql: error: connection refused\n",
        "[]\n",
        check_output() + check_output(),
        check_output(version="150018"),
        check_output(settings={"max_wal_senders": ("-1", "default")}),
        check_output(hba_rules=[{"type": 1}]),
        check_output(role={"login": "yes"}),
        json.dumps({"settings": {}}),
    ],
)
def test_parse_check_refuses_anything_else(text: str) -> None:
    with pytest.raises(TransportError):
        parse_check(text)


def test_check_sql_is_one_statement_with_psql_variables() -> None:
    assert CHECK_SQL.count(";") == 1 and CHECK_SQL.rstrip().endswith(";")
    assert ":'role'" in CHECK_SQL and ":'slot'" in CHECK_SQL
    assert "pg_hba_file_rules" in CHECK_SQL and "pg_authid" in CHECK_SQL


# -- the changes --------------------------------------------------------------------------


def psql(sql: str) -> str:
    return shlex.join(["docker", "exec", C, "psql", "-X", "-U", "postgres", "-d", "postgres",
                       "-c", sql])  # fmt: skip


def sql_of(command: str) -> str:
    argv = shlex.split(command)
    assert argv[:4] == ["docker", "exec", C, "psql"] and argv[-2] == "-c"
    return argv[-1]


def verifier_in(sql: str) -> str:
    start = sql.index("$v$") + 3
    return sql[start : sql.index("$v$", start)]


def test_all_fine_is_no_change() -> None:
    state = ready_state()
    assert changes_of(state) == []
    assert finish_command([], C, "postgres") is None


def test_no_role_creates_it_with_a_verifier_of_the_file_password() -> None:
    changes = changes_of(ready_state(role=None))
    assert len(changes) == 1
    (c,) = changes
    assert c.what == "no replication role vkbackup_wal" and c.then == "none"
    (cmd,) = c.commands
    sql = sql_of(cmd)
    assert sql.startswith('CREATE ROLE "vkbackup_wal" WITH REPLICATION LOGIN PASSWORD $v$')
    assert PG_PASSWORD not in cmd  # the verifier only, never the password
    count, salt, _, _ = split_verifier(verifier_in(sql))
    assert verifier_in(sql) == scram_sha256_verifier(PG_PASSWORD, salt, count)
    assert cmd == psql(sql)
    # the shell word is single-quoted with no quote to escape inside
    assert "'\"'\"'" not in cmd


def test_role_without_replication_gets_it_and_keeps_its_password() -> None:
    (c,) = changes_of(ready_state(role=role_of(replication=False)))
    assert c.what == "role vkbackup_wal: no REPLICATION"
    assert c.commands == (psql('ALTER ROLE "vkbackup_wal" WITH REPLICATION'),)


def test_role_with_another_password_gets_the_file_one() -> None:
    (c,) = changes_of(
        ready_state(
            role=role_of("someone-elses"),
        )
    )
    assert "its password is not the one vkbackup has" in c.what
    sql = sql_of(c.commands[0])
    assert sql.startswith('ALTER ROLE "vkbackup_wal" WITH PASSWORD $v$SCRAM-SHA-256$4096:')
    count, salt, _, _ = split_verifier(verifier_in(sql))
    assert verifier_in(sql) == scram_sha256_verifier(PG_PASSWORD, salt, count)


def test_role_with_md5_password_nologin_and_expired() -> None:
    md5 = {"scram": False, "scram_params": None, "verifier_sha256": "ab" * 32}
    (c,) = changes_of(ready_state(role=role_of(login=False, expired=True) | md5))
    assert c.what == (
        "role vkbackup_wal: no LOGIN, no SCRAM-SHA-256 password (none, or md5), "
        "its password expired (VALID UNTIL)"
    )
    sql = sql_of(c.commands[0])
    assert sql.startswith('ALTER ROLE "vkbackup_wal" WITH LOGIN PASSWORD $v$SCRAM-SHA-256$')
    assert sql.endswith(" VALID UNTIL $v$infinity$v$")


def test_hba_missing_appends_the_gateway_line() -> None:
    (c,) = changes_of(ready_state(rules=IMAGE_RULES))
    assert c.then == "reload"
    assert c.commands == (
        f'docker exec {C} sh -c \'printf "\\n%s\\n%s\\n" "# vkbackup: the WAL stream, from '
        f'the host" "host replication vkbackup_wal {GW}/32 scram-sha-256" >> {HBA}\'',
    )
    argv = shlex.split(c.commands[0])
    assert argv[:5] == ["docker", "exec", C, "sh", "-c"]
    assert shlex.split(argv[5]) == [
        "printf",
        "\\n%s\\n%s\\n",
        "# vkbackup: the WAL stream, from the host",
        f"host replication vkbackup_wal {GW}/32 scram-sha-256",
        ">>",
        HBA,
    ]
    assert finish_command([c], C, "postgres") == psql("SELECT pg_reload_conf()")


def test_hba_all_database_does_not_count_for_replication() -> None:
    all_db = rule(10, "host", "all", "vkbackup_wal", GW, "255.255.255.255", "scram-sha-256")
    (c,) = changes_of(ready_state(rules=[*IMAGE_RULES, all_db]))
    assert c.what.startswith("no pg_hba.conf line lets vkbackup_wal log in for replication")


def test_hba_earlier_reject_line_decides_so_ours_goes_before_it() -> None:
    deny = rule(8, "host", "replication", "all", "172.16.0.0", "255.240.0.0", "reject")
    (c,) = changes_of(ready_state(rules=[*IMAGE_RULES[:6], deny, *IMAGE_RULES[6:], OUR_RULE]))
    assert c.what == (
        f"{HBA} line 8 (host replication all 172.16.0.0 255.240.0.0 reject) decides first for "
        f"vkbackup_wal from {GW}, with reject: the stream cannot log in; the line below goes "
        "before it"
    )
    script = shlex.split(c.commands[0])[5]
    assert script == (
        f'awk -v l="host replication vkbackup_wal {GW}/32 scram-sha-256" '
        f'"FNR == 8 {{ print l }} {{ print }}" {HBA} > {HBA}.vkbackup-new '
        f"&& cat {HBA}.vkbackup-new > {HBA} && rm {HBA}.vkbackup-new"
    )
    assert c.then == "reload"


def test_hba_earlier_ident_line_in_an_included_file() -> None:
    ident = rule(3, "hostnossl", "replication", "vkbackup_wal", "all", None, "ident") | {
        "file_name": "/etc/postgresql/hba.d/ident.conf"
    }
    (c,) = changes_of(ready_state(rules=[ident, OUR_RULE]))
    assert "/etc/postgresql/hba.d/ident.conf line 3" in c.what and "with ident" in c.what
    assert '"FNR == 3 { print l } { print }" /etc/postgresql/hba.d/ident.conf >' in c.commands[0]


@pytest.mark.parametrize(
    ("r", "matches"),
    [
        (rule(1, "host", "replication", "all", "samenet", None, "md5"), True),
        (rule(1, "host", "replication", "all", "samehost", None, "md5"), False),
        (rule(1, "hostssl", "replication", "all", "all", None, "md5"), False),  # never SSL
        (rule(1, "hostnossl", "replication", "all", "all", None, "md5"), True),
        (rule(1, "local", "replication", "all", None, None, "trust"), False),
        (rule(1, "host", "replication", "other", "all", None, "md5"), False),
        (rule(1, "host", "replication", "+vkbackup_wal", "all", None, "md5"), False),
        (
            rule(
                1,
                "host",
                "all,replication",
                "other,vkbackup_wal",
                "172.18.0.0",
                "255.255.0.0",
                "md5",
            ),
            True,
        ),
        (rule(1, "host", "replication", "all", "172.19.0.0", "255.255.0.0", "md5"), False),
        (rule(1, "host", "replication", "all", "::", "::", "md5"), False),  # IPv6: not ours
        (rule(1, "host", "replication", "all", "gateway.example", None, "md5"), False),
        (rule(1, "host", "replication", "all", "all", None, "reject", "broken"), False),
    ],
)
def test_hba_rule_matching(r: dict[str, Any], matches: bool) -> None:
    state = parse_check(check_output(rules=[r]))
    assert (first_matching_rule(state.hba_rules, "vkbackup_wal", GW) is not None) is matches


def test_hba_first_match_decides_and_md5_or_trust_will_do() -> None:
    md5 = rule(1, "host", "replication", "all", "172.18.0.0", "255.255.0.0", "md5")
    deny = rule(2, "host", "replication", "all", "all", None, "reject")
    assert changes_of(ready_state(rules=[md5, deny])) == []
    trust = rule(1, "host", "replication", "all", "samenet", None, "trust")
    assert changes_of(ready_state(rules=[trust, deny])) == []


def test_hba_lines_with_errors_are_reported() -> None:
    bad = rule(11, "hostssl", "replication", "vkbackup_wal", "172.18.0.0", "255.255.0.0", "md5",
               "hostssl record cannot match because SSL is disabled")  # fmt: skip
    (c,) = changes_of(ready_state(rules=[*IMAGE_RULES, bad, OUR_RULE]))
    assert c.what == (
        f"{HBA} line 11: PostgreSQL cannot use this line (hostssl record cannot match because "
        "SSL is disabled): a reload keeps the old rules and a restart fails until it is fixed"
    )
    assert c.commands == ()


def test_hba_changed_but_not_reloaded() -> None:
    (c,) = changes_of(ready_state(hba_reload_pending=True))
    assert c.then == "reload" and "not in effect yet" in c.what
    assert finish_command([c], C, "postgres") == psql("SELECT pg_reload_conf()")


def test_wal_level_minimal_needs_alter_system_and_a_restart() -> None:
    state = ready_state(
        settings={
            "wal_level": ("minimal", "configuration file"),
            "max_wal_senders": ("0", "configuration file"),
        }
    )
    changes = changes_of(state)
    assert [c.commands for c in changes] == [
        (psql("ALTER SYSTEM SET wal_level = replica"),),
        (psql("ALTER SYSTEM SET max_wal_senders = 10"),),
    ]
    assert changes[0].what.startswith("wal_level is minimal: ")
    assert {c.then for c in changes} == {"restart"}
    assert finish_command(changes, C, "postgres") == f"docker restart {C}"


def test_a_setting_on_the_command_line_is_said_not_altered() -> None:
    (c,) = changes_of(ready_state(settings={"wal_level": ("minimal", "command line")}))
    assert c.commands == () and c.then == "restart"
    assert "which ALTER SYSTEM cannot override" in c.what and "set it to replica there" in c.what


def test_slots_used_up_and_loopback_only() -> None:
    state = ready_state(
        settings={
            "max_replication_slots": ("2", "configuration file"),
            "listen_addresses": ("localhost, 127.0.0.1", "configuration file"),
        },
        slots_used=2,
    )
    assert [c.commands for c in changes_of(state)] == [
        (psql("ALTER SYSTEM SET max_replication_slots = 10"),),
        (psql('ALTER SYSTEM SET listen_addresses = "*"'),),
    ]
    assert changes_of(replace(state, slot_exists=True))[0].commands == (
        psql('ALTER SYSTEM SET listen_addresses = "*"'),
    )


def test_another_port_is_reported() -> None:
    (c,) = changes_of(ready_state(settings={"port": ("5433", "configuration file")}))
    assert c.commands == () and "port = 5433" in c.what


@pytest.mark.parametrize(
    "role",
    [
        "x'; DROP ROLE postgres; --",
        'a"b',
        "-U",
        "all",
        "ALL",
        "pg_monitor",
        "public",
        "a b",
        "r\nhost all all all trust",
        "ro\u0142e",
        "x" * 64,
    ],
)
def test_hostile_role_name_is_refused(role: str) -> None:
    with pytest.raises(ConfigError):
        changes_of(ready_state(role=None), role=role)
    with pytest.raises(ConfigError):
        changes_of(ready_state(rules=IMAGE_RULES), role=role)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"container": "$(reboot)"}, ConfigError),
        ({"container": "-v"}, ConfigError),
        ({"user": "postgres; rm -rf /"}, ConfigError),
        ({"gateway": "172.18.0.1; reboot"}, ValueError),
    ],
)
def test_hostile_names_from_the_host_are_refused(kw: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        changes_of(ready_state(), **kw)


@pytest.mark.parametrize("path", ["/data/$(reboot)/pg_hba.conf", "/a/../etc/passwd", "rel/hba"])
def test_hostile_hba_path_is_not_printed(path: str) -> None:
    state = ready_state(rules=IMAGE_RULES, settings={"hba_file": (path, "override")})
    with pytest.raises(TransportError, match="not a plain absolute path"):
        changes_of(state)


def test_ipv6_gateway_gets_a_128() -> None:
    assert (
        hba_line("vkbackup_wal", "fd00::1")
        == "host replication vkbackup_wal fd00::1/128 scram-sha-256"
    )


# -- on the host ----------------------------------------------------------------------------

NETWORKS = {
    "zz_other": {"IPAddress": "10.9.0.4", "Gateway": "10.9.0.1"},
    "chatwoot_default": {"IPAddress": "172.18.0.5", "Gateway": GW},
}


def test_parse_networks_takes_the_first_network_by_name_with_an_address() -> None:
    g = parse_networks(json.dumps(NETWORKS), C)
    assert (g.network, g.address, g.gateway) == ("chatwoot_default", "172.18.0.5", GW)
    none_first = {"a": {"IPAddress": "", "Gateway": ""}, **NETWORKS}
    assert parse_networks(json.dumps(none_first), C).network == "chatwoot_default"


@pytest.mark.parametrize(
    "nets",
    [
        {"host": {"IPAddress": "", "Gateway": ""}},
        {"n": {"IPAddress": "172.18.0.5", "Gateway": ""}},
        {"n": {"IPAddress": "172.18.0.5", "Gateway": "1.2.3.4; reboot"}},
        [],
    ],
)
def test_parse_networks_refuses_no_usable_network(nets: Any) -> None:
    with pytest.raises(TransportError):
        parse_networks(json.dumps(nets), C)


class CheckHost(FakeHost):
    """The discovery host of test_init_names, which also answers docker inspect
    of the networks and the PITR check (CHECK_SQL on stdin)."""

    def __init__(self, check: str) -> None:
        super().__init__()
        self.check = check
        self.inputs: list[bytes] = []

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        if argv[:2] == ["docker", "inspect"] and "NetworkSettings" in argv[3]:
            self.ran.append(argv)
            return Completed(argv, 0, json.dumps(NETWORKS).encode(), "")
        if argv[-2:] == ["-f", "-"]:
            self.ran.append(argv)
            self.inputs.append(input)
            return Completed(argv, 0, self.check.encode(), "")
        return super().run(argv, input=input, check=check, timeout=timeout)


def test_check_pitr_runs_the_check_in_the_container() -> None:
    host = CheckHost(check_output(role=role_of(replication=False)))
    state, changes = check_pitr(host, C, "postgres", "vkbackup_wal", PG_PASSWORD)
    assert host.ran[0] == ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", C]
    assert host.ran[1] == [
        "docker",
        "exec",
        "-i",
        C,
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\t",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "role=vkbackup_wal",
        "-v",
        "slot=vkbackup",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-f",
        "-",
    ]
    assert host.inputs == [CHECK_SQL.encode()]
    assert state.role_exists and not state.role_replication
    assert changes[0].what == "role vkbackup_wal: no REPLICATION"
    assert "172.18.0.1/32" in changes[1].commands[0]


# -- vkbackup init --pitr ---------------------------------------------------------------------


@functools.cache
def _host_key(make: Callable[[], Any]) -> Any:
    return make()  # one host key for every run: a second run sees the same host


def run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: CheckHost, *extra: str
) -> tuple[Any, Path]:
    from tests.unit.transport.test_host_keys import ed25519
    from vkbackup.actions import init as init_module
    from vkbackup.cli.main import cli

    key = _host_key(ed25519)
    monkeypatch.setattr(init_module, "fetch_host_key", lambda *a, **kw: key)
    monkeypatch.setattr("vkbackup.cli.context.AppContext.connect", lambda self, h: host)
    out = tmp_path / "etc" / "vkbackup.toml"
    base = tmp_path / "base.toml"
    base.write_text(
        f'[storage]\ntype = "local"\npath = "{tmp_path / "store"}"\n\n'
        f'[encryption]\nrecipients = ["age1{"q" * 58}"]\n'
    )
    base.chmod(0o600)
    res = CliRunner().invoke(
        cli,
        [
            "--config",
            str(base),
            "init",
            "root@203.0.113.7",
            "--known-hosts",
            str(tmp_path / "known_hosts"),
            "--yes",
            "--out",
            str(out),
            "--pitr",
            *extra,
        ],
        standalone_mode=False,
    )
    return res, out


def test_init_pitr_prints_the_commands_and_turns_pitr_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    host = CheckHost(check_output(role=None))  # the official image, no role yet
    res, out = run_init(tmp_path, monkeypatch, host)
    assert res.exception is None, res.output
    pw_file = tmp_path / "etc" / "pitr-password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = read_password_file(pw_file)
    err = res.stderr
    assert f"PITR: wrote the replication password to {pw_file} (mode 0600)" in err
    assert (
        f"PITR: {C}: the WAL stream connects to 172.18.0.5 on network chatwoot_default; its "
        f"connections come from the network's gateway {GW} (the host)"
    ) in err
    assert f"PITR: {C}: 2 changes needed; init applied none" in err
    assert "  1. no replication role vkbackup_wal\n" in err
    create = next(ln.strip() for ln in err.splitlines() if "CREATE ROLE" in ln)
    sql = sql_of(create)
    count, salt, _, _ = split_verifier(verifier_in(sql))
    assert verifier_in(sql) == scram_sha256_verifier(password, salt, count)
    assert password not in err and password not in res.stdout
    assert "     then: nothing (a role change applies at once)\n" in err
    assert f"host replication vkbackup_wal {GW}/32 scram-sha-256" in err
    assert "     then: reload\n" in err
    assert err.endswith(
        "  after all of them, once:\n       " + psql("SELECT pg_reload_conf()") + "\n"
    )
    # nothing was run on the host but the read-only check
    assert not any("CREATE ROLE" in " ".join(a) or "pg_hba" in " ".join(a) for a in host.ran)
    doc = tomllib.loads(out.read_text())
    assert doc["pitr"] == {
        "role": "vkbackup_wal",
        "slot": "vkbackup",
        "password_file": str(pw_file),
    }
    pg = [s for s in doc["hosts"]["prod"]["sources"] if s["type"] == "postgres"]
    assert [s.get("pitr") for s in pg] == [True]
    assert pg[0]["container"] == C and pg[0]["database"] == "chatwoot_production"

    # run again on a ready server: the password file is kept, and it says so
    host2 = CheckHost(check_output(role=role_of(password), rules=[*IMAGE_RULES, OUR_RULE]))
    out.unlink()
    res2, _ = run_init(tmp_path, monkeypatch, host2)
    assert res2.exception is None, res2.output
    assert read_password_file(pw_file) == password
    assert f"PITR: the replication password is in {pw_file}" in res2.stderr
    assert f"PITR: {C}: ready (" in res2.stderr


def test_init_pitr_restart_and_a_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = CheckHost(
        check_output(
            role=role_of(),
            rules=[*IMAGE_RULES, OUR_RULE],
            settings={
                "wal_level": ("minimal", "configuration file"),
                "max_wal_senders": ("0", "configuration file"),
            },
        )
    )
    (tmp_path / "etc").mkdir()
    pw = tmp_path / "etc" / "pitr-password"
    write_password_file(pw, PG_PASSWORD)
    res, _ = run_init(tmp_path, monkeypatch, host)
    assert res.exception is None, res.output
    err = res.stderr
    assert "then: restart (the restart stops the database for a few seconds)" in err
    assert err.endswith(f"  after all of them, once:\n       docker restart {C}\n")

    broken = CheckHost("psql: FATAL: permission denied for view pg_hba_file_rules\n")
    (tmp_path / "etc" / "vkbackup.toml").unlink()
    res, _ = run_init(tmp_path, monkeypatch, broken)
    assert res.exception is None, res.output
    assert f"PITR: {C}: cannot check: the PostgreSQL setup check printed something" in (res.stderr)


def test_a_hostile_stored_digest_is_just_not_a_match() -> None:
    for digest in ("ü" * 64, "x", "AB" * 32):
        (c,) = changes_of(ready_state(role=role_of(verifier_sha256=digest)))
        assert "its password is not the one vkbackup has" in c.what
    for params in ("4096:ü", "99999999999:AAAA", "x:AAAA", "4096"):
        (c,) = changes_of(ready_state(role=role_of(scram_params=params)))
        assert "its password is not the one vkbackup has" in c.what
