"""Unit tests for the config loader: valid files, each kind of invalid input, garbage."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vkbackup.config import find_config_file, load_config, parse_config
from vkbackup.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "vkbackup.toml"


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.source_file == EXAMPLE
    assert cfg.storage.type == "s3"
    assert cfg.storage.bucket == "vk-backups"
    assert cfg.storage.object_lock is not None
    assert cfg.storage.object_lock.days == 30
    prod = cfg.hosts["prod"]
    assert prod.port == 22
    assert [s.type for s in prod.sources] == [
        "postgres",
        "files",
        "files",
        "docker-volume",
        "docker-volume",
        "docker-image",
        "host",
    ]
    assert prod.sources[0].container == "chatwoot-postgres-1"
    assert prod.sources[1].secret is True
    assert prod.sources[3].stop == ("chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1")
    assert prod.sources[3].where == "hosts.prod.sources[3]"
    assert (prod.sources[3].quiesce, prod.sources[4].quiesce) == ("pause", "stop")
    assert prod.sources[4].stop_timeout == 30
    assert cfg.retention.keep_daily == 7
    server = prod.sources[6]
    assert server.data_dirs == ("/var/lib/caddy",) and server.restart == ("caddy",)


def test_no_file_gives_embedded_defaults() -> None:
    cfg = load_config(None)
    assert cfg.storage.type == "local"
    assert str(cfg.storage.path) == "/var/backups/vkbackup"
    assert cfg.hosts == {}


def test_minimal_local_config() -> None:
    cfg = parse_config({"storage": {"path": "/srv/backups"}}, "t.toml")
    assert cfg.storage.type == "local"
    assert str(cfg.storage.path) == "/srv/backups"


def _err(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "cfg.toml")
    return str(exc.value)


def test_misspelled_top_level_key_is_named() -> None:
    doc = example()
    doc["retension"] = doc.pop("retention")
    msg = _err(doc)
    assert msg.startswith("cfg.toml: retension: unknown key")
    assert "retention" in msg


def test_misspelled_nested_source_key_names_full_path() -> None:
    doc = example()
    doc["hosts"]["prod"]["sources"][0]["contaner"] = "x"
    msg = _err(doc)
    assert "hosts.prod.sources[0].contaner: unknown key" in msg
    assert "did you mean 'container'" in msg


def test_missing_required_key() -> None:
    doc = example()
    del doc["hosts"]["prod"]["sources"][0]["container"]
    assert "hosts.prod.sources[0].container: is required" in _err(doc)


def test_wrong_type_is_named() -> None:
    doc = example()
    doc["hosts"]["prod"]["port"] = "22"
    assert "hosts.prod.port: must be an integer, got a string" in _err(doc)


def test_bool_is_not_an_int() -> None:
    doc = example()
    doc["retention"]["keep_last"] = True
    assert "retention.keep_last: must be an integer, got a boolean" in _err(doc)


def test_port_out_of_range() -> None:
    doc = example()
    doc["hosts"]["prod"]["port"] = 70000
    assert "hosts.prod.port: must be between 1 and 65535" in _err(doc)


def test_unknown_source_type() -> None:
    doc = example()
    doc["hosts"]["prod"]["sources"][2]["type"] = "mysql"
    assert "hosts.prod.sources[2].type: must be one of" in _err(doc)


def test_snapshot_compression_choice() -> None:
    doc = example()
    assert parse_config(doc, "cfg.toml").snapshot.compression == "auto"
    doc["snapshot"] = {"compression": "gzip"}
    assert parse_config(doc, "cfg.toml").snapshot.compression == "gzip"
    doc["snapshot"] = {"compression": "brotli"}
    assert "snapshot.compression: must be one of 'auto', 'zstd', 'gzip', 'none'" in _err(doc)


def test_duplicate_source_names() -> None:
    doc = example()
    doc["hosts"]["prod"]["sources"][1]["name"] = "chatwoot-db"
    assert "duplicate source name 'chatwoot-db'" in _err(doc)


def test_bad_recipient() -> None:
    doc = example()
    doc["encryption"]["recipients"] = ["ssh-ed25519 AAAA"]
    assert "encryption.recipients: [0] must be an age public key" in _err(doc)


def test_s3_requires_bucket() -> None:
    assert "storage.bucket: is required when type = 's3'" in _err({"storage": {"type": "s3"}})


def test_bucket_without_s3_type() -> None:
    assert "storage.bucket: is only for type = 's3'" in _err({"storage": {"bucket": "b"}})


def test_relative_file_path_refused() -> None:
    doc = example()
    doc["hosts"]["prod"]["sources"][1]["paths"] = ["opt/x/.env"]
    assert "hosts.prod.sources[1].paths: [0] must be an absolute path" in _err(doc)


def test_object_lock_needs_days() -> None:
    doc = example()
    doc["storage"]["object_lock"] = {"mode": "governance"}
    assert "storage.object_lock.days: is required" in _err(doc)


def test_sources_must_be_array() -> None:
    doc = example()
    doc["hosts"]["prod"]["sources"] = {"type": "files"}
    assert "hosts.prod.sources: must be an array of tables" in _err(doc)


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    p = tmp_path / "v.toml"
    p.write_text("[storage\ntype = 'local'")
    with pytest.raises(ConfigError, match=r"v\.toml: invalid TOML"):
        load_config(p)


def test_non_utf8_names_file(tmp_path: Path) -> None:
    p = tmp_path / "v.toml"
    p.write_bytes(b"\xff\xfe[storage]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_credential_in_world_readable_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "v.toml"
    p.write_text(
        '[storage]\ntype = "s3"\nbucket = "b"\naccess_key_id = "AKIA"\n'
        'secret_access_key = "very-secret"\n'
    )
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "readable by group or others" in str(exc.value)
    assert exc.value.hint is not None and f"chmod 600 {p}" in exc.value.hint
    assert "very-secret" not in str(exc.value)
    os.chmod(p, 0o600)
    assert load_config(p).storage.secret_access_key == "very-secret"


def test_world_readable_file_without_credentials_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "v.toml"
    p.write_text('[storage]\npath = "/x"\n')
    os.chmod(p, 0o644)
    assert str(load_config(p).storage.path) == "/x"


def test_lookup_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    (home / ".config" / "vkbackup").mkdir(parents=True)
    cwd.mkdir()
    etc = tmp_path / "etc.toml"  # not this machine's /etc (tests/unit/config/test_lookup.py)
    assert find_config_file(None, {}, cwd, home, etc) is None
    user = home / ".config" / "vkbackup" / "config.toml"
    user.write_text("")
    assert find_config_file(None, {}, cwd, home, etc) == user
    local = cwd / "vkbackup.toml"
    local.write_text("")
    assert find_config_file(None, {}, cwd, home, etc) == local
    env = {"VKBACKUP_CONFIG": "/e.toml"}
    assert find_config_file(None, env, cwd, home, etc) == Path("/e.toml")
    assert find_config_file("/x.toml", env, cwd, home, etc) == Path("/x.toml")


toml_scalars = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=20),
    st.booleans(),
    st.floats(allow_nan=False),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=20,
)
known_keys = st.sampled_from(
    ["storage", "encryption", "hosts", "retention", "snapshot", "monitoring", "drill", "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(known_keys, toml_values, max_size=5))
def test_garbage_never_tracebacks(doc: dict[str, Any]) -> None:
    try:
        parse_config(doc, "fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml: ")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_example_never_tracebacks(data: st.DataObject) -> None:
    doc = example()
    host = doc["hosts"]["prod"]
    idx = data.draw(st.integers(0, len(host["sources"]) - 1))
    src = host["sources"][idx]
    key = data.draw(st.sampled_from(sorted(src)))
    src[key] = data.draw(toml_values)
    try:
        parse_config(doc, "fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml: hosts.prod.sources[")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_bytes_file_never_tracebacks(tmp_path_factory: Any, data: bytes) -> None:
    p = tmp_path_factory.mktemp("g") / "g.toml"
    p.write_bytes(data)
    try:
        load_config(p)
    except ConfigError as e:
        assert str(p) in str(e)


# -- the host source ------------------------------------------------------------------


def _with_host(**keys: Any) -> dict[str, Any]:
    doc = example()
    doc["hosts"]["prod"]["sources"] = [
        s for s in doc["hosts"]["prod"]["sources"] if s["type"] != "host"
    ] + [{"type": "host", "name": "server", **keys}]
    return doc


def test_host_source_defaults_and_keys() -> None:
    src = parse_config(_with_host(), "cfg.toml").hosts["prod"].sources[-1]
    assert (src.type, src.paths, src.data_dirs, src.restart) == (
        "host",
        (),
        ("/var/lib/caddy",),
        ("caddy",),
    )
    src = (
        parse_config(
            _with_host(
                paths=["/opt/janus/etc/*.jcfg"], data_dirs=[], restart=["caddy", "janus.service"]
            ),
            "cfg.toml",
        )
        .hosts["prod"]
        .sources[-1]
    )
    assert src.paths == ("/opt/janus/etc/*.jcfg",)
    assert src.data_dirs == () and src.restart == ("caddy", "janus.service")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"paths": ["etc/caddy"]}, "sources[6].paths: [0] must be an absolute path"),
        ({"paths": "/etc/caddy"}, "sources[6].paths: must be a list of strings"),
        ({"data_dirs": ["/var/lib/../x"]}, "sources[6].data_dirs: [0] must be an absolute path"),
        ({"restart": ["caddy; reboot"]}, "sources[6].restart: [0] must be a systemd unit name"),
        ({"restart": ["-caddy"]}, "sources[6].restart: [0] must be a systemd unit name"),
        ({"restart": [""]}, "sources[6].restart: [0] must be a non-empty string"),
        ({"secret": True}, "sources[6].secret: unknown key"),
        ({"datadirs": ["/x"]}, "did you mean 'data_dirs'"),
    ],
)
def test_host_source_errors_name_the_key(keys: dict[str, Any], message: str) -> None:
    msg = _err(_with_host(**keys))
    assert msg.startswith("cfg.toml: hosts.prod.")
    assert message in msg


def test_one_host_source_per_host() -> None:
    doc = _with_host()
    doc["hosts"]["prod"]["sources"].append({"type": "host", "name": "again"})
    msg = _err(doc)
    assert "hosts.prod.sources[7].type: only one source of type 'host' per host" in msg
    assert "hosts.prod.sources[6]" in msg


def test_init_proposes_a_host_source_on_debian_with_systemd() -> None:
    from vkbackup.actions.init import Discovery, render_config
    from vkbackup.config.model import HostConfig

    host = HostConfig(name="prod", address="203.0.113.7")
    storage = '[storage]\ntype = "local"\npath = "/srv/b"'
    encryption = '[encryption]\nrecipients = ["age1' + "q" * 58 + '"]'
    plain = Discovery(facts={}, caddy_data_dir="/var/lib/caddy")
    text = render_config("prod", host, plain, storage, encryption)
    types = [s.type for s in parse_config(tomllib.loads(text), "init").hosts["prod"].sources]
    assert types == ["files"]  # no dpkg/systemd: Caddy's data dir as a secret files source
    server = Discovery(facts={}, caddy_data_dir="/var/lib/caddy", debian_systemd=True)
    text = render_config("prod", host, server, storage, encryption)
    srcs = parse_config(tomllib.loads(text), "init").hosts["prod"].sources
    assert [(s.type, s.name) for s in srcs] == [("host", "host")]  # it takes the data dir
