"""Key rotation (issue 16, finding 6): the recipient set is part of what makes an
object reusable. After encryption.recipients changes, the next snapshot reuses
nothing: every object is uploaded again, opens with the new identity alone, and
the old identity opens none of it.

Real snapshots on this machine: LocalTransport (bash, tar, gzip; no server) ->
age -> a local storage directory, as tests/integration/actions/test_snapshot_local.py
runs them. A fake incremental source shows that a chain is not continued across
a rotation either (it starts again with a full)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog
from vkbackup.actions import snapshot as snapshot_action
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig, SourceConfig
from vkbackup.crypto import X25519Identity, decrypt_bytes, generate_identity
from vkbackup.errors import CryptoError, IntegrityError
from vkbackup.manifest import Manifest, decode, encode, open_private, recipient_set_tag
from vkbackup.sources import PlanContext, SourcePlan, StreamPlan, make_source
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.base import Transport, pipeline_argv
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def make_cfg(tmp: Path, recipients: list[X25519Identity], tree: Path) -> Config:
    doc = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": [str(i.recipient()) for i in recipients]},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [
                    {"type": "files", "name": "etc", "paths": [str(tree / "*.conf")]},
                    {
                        "type": "files",
                        "name": "secrets",
                        "paths": [str(tree / ".env")],
                        "secret": True,
                    },
                    {"type": "files", "name": "vol", "paths": [str(tree / "a.conf")]},
                ],
            }
        },
    }
    return parse_config(doc, "test.toml")


class ChainSource:
    """Stands in for a docker volume: a full when there is no previous chain, else an
    incremental on top of it (the earlier levels referenced as they are)."""

    type = "docker-volume"
    seen: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        chain = sorted(ctx.previous, key=lambda o: o.chain)
        ChainSource.seen.append(tuple(o.chain for o in chain))
        level = len(chain)
        stream = StreamPlan(
            name=f"volume-{level}.tar",
            role="tar" if level == 0 else "tar-incremental",
            argv=pipeline_argv(f"echo level {level} of {ctx.snapshot_id}"),
            chain=level,
        )
        return SourcePlan(streams=[stream], reuse=list(chain))

    def after_stream(self, t: Transport, stream: StreamPlan, plan: SourcePlan, tail: str) -> None:
        return None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.conf").write_text("a = 1\n")
    (d / "b.conf").write_text("b = 2\n")
    (d / ".env").write_text("SECRET=abc\n")
    return d


@pytest.fixture(autouse=True)
def fake_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    real = make_source
    ChainSource.seen = []

    def make(cfg: SourceConfig) -> Any:
        return ChainSource(cfg) if cfg.name == "vol" else real(cfg)

    monkeypatch.setattr(snapshot_action, "make_source", make)


def opens(storage: LocalStorage, m: Manifest, ident: X25519Identity) -> list[bool]:
    """For each object of *m*, and its private part last: does *ident* alone open it?"""
    out = []
    for o in m.objects:
        data = (storage.root / o.key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == o.sha256
        try:
            decrypt_bytes(data, [ident], name=o.key)
            out.append(True)
        except CryptoError:
            out.append(False)
    m.private = None
    try:
        open_private(m, [ident])
        out.append(True)
    except CryptoError:
        out.append(False)
    return out


def test_a_recipient_change_reuses_nothing_and_locks_the_old_key_out(
    tmp_path: Path, tree: Path
) -> None:
    old, new = generate_identity(), generate_identity()
    storage = LocalStorage(tmp_path / "store")

    def snap(recipients: list[X25519Identity]) -> Manifest:
        r = run_snapshot(make_cfg(tmp_path, recipients, tree), "box", storage=storage,
                         connect=local)  # fmt: skip
        assert r.status == "complete", [s.error for s in r.sources]
        return catalog.load_manifest(storage, "box", r.id)

    m1 = snap([old])
    assert all(o.recipient_set == recipient_set_tag([old.recipient()]) for o in m1.objects)
    m2 = snap([old])  # nothing changed: everything reused, the chain goes on
    assert m2.bytes_new == sum(o.size for o in m2.objects if o.source == "vol" and o.chain == 1)
    assert {o.key for o in m2.objects if o.source != "vol"} == {
        o.key for o in m1.objects if o.source != "vol"
    }
    # step 1 of a rotation: add the new key. Everything is taken again, for both keys
    m3 = snap([old, new])
    assert m3.bytes_reused == 0 and m3.bytes_new == m3.bytes_total > 0
    assert all(m3.origin(o) == m3.id for o in m3.objects)
    assert opens(storage, m3, new) == [True] * (len(m3.objects) + 1)
    # step 2: drop the old key. Taken again; the old identity opens none of it
    m4 = snap([new])
    assert m4.bytes_reused == 0 and all(m4.origin(o) == m4.id for o in m4.objects)
    assert opens(storage, m4, new) == [True] * (len(m4.objects) + 1)
    assert opens(storage, m4, old) == [False] * (len(m4.objects) + 1)
    # a straight swap, no overlap: the same
    m5 = snap([old])
    assert m5.bytes_reused == 0
    assert opens(storage, m5, new) == [False] * (len(m5.objects) + 1)
    # the chain started again with a full at each change, and grew only in between
    assert ChainSource.seen == [(), (0,), (), (), ()]
    # unchanged again: reused
    m6 = snap([old])
    assert {o.key for o in m6.objects if o.source == "etc"} == {
        o.key for o in m5.objects if o.source == "etc"
    }


def test_the_tag_ignores_order_and_repeats() -> None:
    a, b = generate_identity().recipient(), generate_identity().recipient()
    assert recipient_set_tag([a, b]) == recipient_set_tag([b, a, b])
    assert recipient_set_tag([a]) != recipient_set_tag([a, b]) != recipient_set_tag([b])
    assert recipient_set_tag([str(a)]) == recipient_set_tag([a])


def test_manifests_without_the_field_still_decode_and_are_never_reused(tmp_path: Path) -> None:
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    when = datetime(2026, 5, 1, tzinfo=UTC)
    m = SnapshotBuilder(storage, "box", [ident.recipient()]).snapshot(when, new={"etc": b"x"})
    doc = json.loads(encode(m, [ident.recipient()]))
    for o in doc["objects"]:
        del o["recipient_set"]
    old = decode(json.dumps(doc).encode(), "old.json")
    assert [o.recipient_set for o in old.objects] == [""]
    assert recipient_set_tag([ident.recipient()]) != ""  # an old object is never reused
    doc["objects"][0]["recipient_set"] = "not hex"
    with pytest.raises(IntegrityError, match="bad recipient_set"):
        decode(json.dumps(doc).encode(), "bad.json")
