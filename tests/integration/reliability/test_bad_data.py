"""Bad data in storage, with real snapshots (LocalTransport -> age -> local storage):

- a data object with a flipped bit, truncated, deleted, or swapped with another
  snapshot's: `vkbackup verify` names it, and restore's object reader
  (`vkbackup.restore.objects.open_object`) refuses it before EOF, naming the key;
- malformed or hostile manifests: `catalog.load_manifest` refuses each with an
  IntegrityError naming the manifest; garbage (hypothesis) never tracebacks.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.lifecycle.conftest import LifecycleEnv, make_env
from tests.integration.reliability.conftest import run_cli
from vkbackup import catalog, layout
from vkbackup.actions.verify import run_verify
from vkbackup.errors import CryptoError, IntegrityError, ObjectNotFoundError, VkError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.objects import open_object
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader

HOST = "box"


@pytest.fixture(scope="module")
def two_template(tmp_path_factory: pytest.TempPathFactory) -> LifecycleEnv:
    """Two snapshots with different content; each object spans many age chunks."""
    env = make_env(tmp_path_factory.mktemp("bad"))
    (env.tree / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    env.snap()
    (env.tree / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    env.snap()
    return env


@pytest.fixture
def two(two_template: LifecycleEnv, tmp_path: Path) -> LifecycleEnv:
    store = tmp_path / "store"
    shutil.copytree(two_template.storage.root, store)
    # the CLI reads the config file: point a copy of it at the private storage copy
    cfg_text = two_template.config_path.read_text().replace(
        str(two_template.storage.root), str(store)
    )
    config_path = tmp_path / "vkbackup.toml"
    config_path.write_text(cfg_text)
    return LifecycleEnv(
        two_template.root, config_path, two_template.cfg, LocalStorage(store),
        two_template.identity, two_template.tree,
    )  # fmt: skip


def objects(env: LifecycleEnv) -> tuple[ObjectRecord, ObjectRecord]:
    first, second = catalog.load_all(env.storage, HOST)
    return first.objects[0], second.objects[0]


def plain_size(env: LifecycleEnv, obj: ObjectRecord) -> int:
    return sum(len(c) for c in iter(open_object(env.storage, obj, [env.identity]).read, b""))


def damage(env: LifecycleEnv, kind: str) -> ObjectRecord:
    """Damage the second snapshot's object; return its record."""
    first, second = objects(env)
    path = env.path(second.key)
    if kind == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0x04
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        with open(path, "r+b") as f:
            f.truncate(second.size - 70_000)
    elif kind == "delete":
        path.unlink()
    else:  # swap: the other snapshot's object (a valid age file to the same key)
        shutil.copy(env.path(first.key), path)
    return second


PROBLEM = {"flip": "sha256", "truncate": "size", "delete": "missing", "swap": "swapped"}


@pytest.mark.parametrize("kind", ["flip", "truncate", "delete", "swap"])
def test_verify_names_the_damaged_object(two: LifecycleEnv, kind: str) -> None:
    obj = damage(two, kind)
    results = run_verify(
        two.storage, catalog.list_snapshots(two.storage, HOST), identities=[two.identity]
    )
    bad = [(r.id, b) for r in results for b in r.bad]
    assert len(bad) == 1
    assert bad[0][1].key == obj.key and bad[0][1].problem == PROBLEM[kind]
    assert obj.key in bad[0][1].detail
    # and the CLI says so, exit 1, no traceback
    cli = run_cli(two.config_path, "verify", "--all")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert obj.key in cli.stderr and f": {PROBLEM[kind]}:" in cli.stderr
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize("kind", ["flip", "truncate", "delete", "swap"])
def test_restore_reader_refuses_before_eof(two: LifecycleEnv, kind: str) -> None:
    """open_object never reports a clean end for a damaged object: the read that
    would end it raises instead, naming the key (a flipped bit already at the
    damaged 64 KiB age chunk, long before the end)."""
    intact = plain_size(two, objects(two)[1])
    obj = damage(two, kind)
    delivered = 0
    with pytest.raises(VkError) as info:
        r = open_object(two.storage, obj, [two.identity])
        while chunk := r.read(65536):
            delivered += len(chunk)
    assert obj.key in str(info.value)
    if kind == "delete":
        assert isinstance(info.value, ObjectNotFoundError) and delivered == 0
    elif kind == "flip":
        assert isinstance(info.value, CryptoError)
        assert delivered < intact // 2  # stopped at the damaged chunk (a third of the way)
    else:
        assert isinstance(info.value, IntegrityError | CryptoError)
        assert delivered < intact or kind == "swap"


# -- manifests ---------------------------------------------------------------------------


def put_manifest(env: LifecycleEnv, doc: Any, sid: str) -> str:
    key = layout.manifest_key(HOST, sid)
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    env.storage.put(key, BytesReader(body))
    return key


def good_doc(env: LifecycleEnv) -> tuple[dict[str, Any], str]:
    _, sid = catalog.list_snapshots(env.storage, HOST)[-1]
    doc = json.loads(env.path(layout.manifest_key(HOST, sid)).read_bytes())
    return doc, sid


Mutation = Callable[[dict[str, Any], str], Any]


def moved(doc: dict[str, Any], sid: str, host: str, new_sid: str) -> dict[str, Any]:
    """A consistent, valid manifest of another host or snapshot (keys included)."""
    text = json.dumps(doc).replace(f"data/{HOST}/{sid}/", f"data/{host}/{new_sid}/")
    return {**json.loads(text), "host": host, "id": new_sid}


HOSTILE: dict[str, tuple[Mutation, str]] = {
    "not JSON": (lambda d, s: b"{not json", "not valid JSON"),
    "not an object": (lambda d, s: [d], "not a JSON object"),
    "wrong format": (lambda d, s: {**d, "format": "other/9"}, "unknown manifest format"),
    "size is a string": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "size": "12"}]},
        "wrong type",
    ),
    "size is a bool": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "size": True}]},
        "wrong type",
    ),
    "objects not a list": (lambda d, s: {**d, "objects": {"a": 1}}, "wrong type"),
    "huge size": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "size": 10**30}]},
        "out of range",
    ),
    "negative size": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "size": -1}]},
        "out of range",
    ),
    "huge chain": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "chain": 10**18}]},
        "out of range",
    ),
    "seconds overflow": (
        lambda d, s: {**d, "sources": [{**d["sources"][0], "seconds": 10**400}]},
        "out of range",
    ),
    "seconds NaN": (
        lambda d, s: {**d, "sources": [{**d["sources"][0], "seconds": float("nan")}]},
        "out of range",
    ),
    "key of another host": (
        lambda d, s: {
            **d,
            "objects": [{**d["objects"][0], "key": f"data/other/{s}/etc/files.tar.gz.age"}],
        },
        "outside this host's data",
    ),
    "key with ..": (
        lambda d, s: {
            **d,
            "objects": [{**d["objects"][0], "key": f"data/box/{s}/../../../etc/shadow"}],
        },
        "outside this host's data",
    ),
    "key outside data/": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "key": "locks/box.lock"}]},
        "outside this host's data",
    ),
    "uploaded_in with ..": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "uploaded_in": "../../x"}]},
        "outside this host's data",
    ),
    "object name with ..": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "name": "../../x.age"}]},
        "bad object name",
    ),
    "bad sha256": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "sha256": "zz" * 32}]},
        "bad size or sha256",
    ),
    "bad compression": (
        lambda d, s: {**d, "objects": [{**d["objects"][0], "compression": "bzip2; rm -rf /"}]},
        "unknown compression",
    ),
    "other host's manifest": (lambda d, s: moved(d, s, "other", s), "it was moved or swapped"),
    "other snapshot's manifest": (
        lambda d, s: moved(d, s, HOST, "20200101T000000Z-0000"),
        "it was moved or swapped",
    ),
    "id with a newline": (lambda d, s: {**d, "id": s + "\n"}, "bad snapshot id"),
    "missing field": (lambda d, s: {k: v for k, v in d.items() if k != "sources"}, "missing"),
    "bad status": (lambda d, s: {**d, "status": "complete\u202e"}, "bad status"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_refused_naming_it(two: LifecycleEnv, case: str) -> None:
    doc, sid = good_doc(two)
    mutate, why = HOSTILE[case]
    key = put_manifest(two, mutate(copy.deepcopy(doc), sid), sid)
    with pytest.raises(IntegrityError) as info:
        catalog.load_manifest(two.storage, HOST, sid)
    assert str(info.value).startswith(key + ":") and why in str(info.value), str(info.value)


def test_oversized_manifest_is_not_loaded(two: LifecycleEnv) -> None:
    _, sid = good_doc(two)
    key = layout.manifest_key(HOST, sid)
    with open(two.path(key), "wb") as f:
        f.truncate(catalog.MANIFEST_LIMIT + 1)
    with pytest.raises(IntegrityError) as info:
        catalog.load_manifest(two.storage, HOST, sid)
    assert key in str(info.value) and "refusing to load it" in str(info.value)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_garbage_manifests_never_traceback(two_template: LifecycleEnv, data: st.DataObject) -> None:
    env = two_template
    doc, sid = good_doc(env)
    # replace one value somewhere in a valid manifest (top level, an object, a source)
    where = data.draw(st.sampled_from(["top", "object", "source"]))
    target = doc if where == "top" else doc["objects" if where == "object" else "sources"][0]
    field = data.draw(st.sampled_from(sorted(target)))
    target[field] = data.draw(_JSON)
    if data.draw(st.booleans()):
        body = json.dumps(doc).encode()
        cut = data.draw(st.integers(0, len(body)))
        raw = body[:cut] + data.draw(st.binary(max_size=20))
    else:
        raw = json.dumps(doc).encode()
    storage = LocalStorage(env.root / "garbage-store")
    key = layout.manifest_key(HOST, sid)
    storage.put(key, BytesReader(raw))
    try:
        m = catalog.load_manifest(storage, HOST, sid)
    except IntegrityError as e:
        assert str(e).startswith(key)
    else:
        assert m.id == sid and m.host == HOST
        for o in m.objects:  # whatever passed is safe to use as a key and a size
            assert o.key.startswith(f"data/{HOST}/") and ".." not in o.key.split("/")
            assert 0 <= o.size <= 2**50 and 0 <= o.chain <= 10_000


def test_names_with_a_trailing_newline_are_refused() -> None:
    """`$` in a regex also matches before a final newline: names become keys and paths."""
    from vkbackup.config import parse_config
    from vkbackup.errors import ConfigError

    assert layout.NAME_RE.match("box") and not layout.NAME_RE.match("box\n")
    assert not layout.ID_RE.match("20261126T020000Z-abcd\n")
    assert not layout.ID_RE.match("٢٠٢٦١١٢٦T020000Z-abcd")  # other scripts' digits
    with pytest.raises(ConfigError):
        parse_config({"hosts": {"box\n": {"address": "127.0.0.1"}}}, "t.toml")
