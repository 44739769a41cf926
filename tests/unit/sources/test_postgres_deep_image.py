"""`verify --deep` starts a throwaway PostgreSQL from an image the manifest's private
part names, which anyone holding the (public) recipient can forge. Only an
official postgres:<major> image of the recorded major is started, or the image
the operator names; it reaches `docker run` as one argv element; a hostile value
is an IntegrityError naming the manifest field (issue 16, finding 3)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vkbackup.actions import verify as verify_module
from vkbackup.actions.verify import make_deep_check
from vkbackup.config.model import HostConfig
from vkbackup.errors import IntegrityError, TransportError, UsageError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.records import HostFacts, PrivatePart, SourceEntry
from vkbackup.sources.postgres import Meta, deep_check, deep_image
from vkbackup.transport.base import Completed

WHERE = "snapshots/prod/20250101T000000Z-abcd.json: sources.db.meta.server.image"
DIGEST = "@sha256:" + "a" * 64
DUMP = ObjectRecord("data/prod/x/db/dump.pgdump.age", "db", "dump.pgdump.age", "pg-dump", 1, "0")


def meta(image: str, major: int | None = 15) -> Meta:
    return Meta("pg", "app", "postgres", major, image, {"t": 1})


@pytest.mark.parametrize(
    "image",
    [
        "postgres:15",
        "postgres:15-lab",
        "postgres:15.6-alpine",
        "postgres:15-alpine3.19",
        "postgres:15-bookworm" + DIGEST,
        "library/postgres:15",
        "docker.io/library/postgres:15",
    ],
)
def test_official_images_of_the_recorded_major_are_started(image: str) -> None:
    assert deep_image(meta(image), WHERE) == image


HOSTILE = [
    "evil/miner:latest",
    "pgvector/pgvector:pg15",
    "registry.evil.example/postgres:15",
    "docker.io/evil/postgres:15",
    "postgres",
    "postgres:latest",
    "postgres:16",  # another major than the recorded server's
    "postgres:1",
    "postgres:15 --privileged",
    "--privileged",
    "-v/:/host",
    "postgres:15;reboot",
    "postgres:15$(reboot)",
    "postgres:15\nreboot",
    "postgres:15-",
    "POSTGRES:15",
    "",
]


@pytest.mark.parametrize("image", HOSTILE)
def test_anything_else_is_an_integrity_error_naming_the_field(image: str) -> None:
    with pytest.raises(IntegrityError) as exc:
        deep_image(meta(image), WHERE)
    assert str(exc.value).startswith(WHERE + ":")
    assert "\n" not in str(exc.value)
    assert "--deep-image" in (exc.value.hint or "")


def test_no_recorded_major_starts_nothing() -> None:
    with pytest.raises(IntegrityError, match="not PostgreSQL None"):
        deep_image(meta("postgres:15", None), WHERE)


def test_the_operators_image_is_used_if_it_is_a_docker_reference() -> None:
    assert deep_image(meta("evil/miner"), WHERE, "pgvector/pgvector:pg16") == (
        "pgvector/pgvector:pg16"
    )
    assert deep_image(meta("x"), WHERE, "registry:5000/team/pg:16" + DIGEST)
    for bad in ("--privileged", "pg 16", "pg:16;id", ""):
        with pytest.raises(UsageError):
            deep_image(meta("postgres:15"), WHERE, bad)


class Recorder:
    name = "scratch"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], **kw: Any) -> Completed:
        self.calls.append(argv)
        if argv[:2] == ["docker", "run"]:
            raise TransportError("stop here")
        return Completed(argv, 0, b"", "")


@pytest.mark.parametrize("image", ["evil/miner:latest", "postgres:15 --privileged", "postgres:16"])
def test_deep_check_runs_nothing_for_a_hostile_image(image: str) -> None:
    t = Recorder()
    with pytest.raises(IntegrityError, match=r"sources\.db\.meta\.server\.image"):
        deep_check(t, None, [], meta(image), [DUMP], where=WHERE)  # type: ignore[arg-type]
    assert t.calls == []


def test_the_image_is_one_argv_element_of_docker_run() -> None:
    t = Recorder()
    problems = deep_check(t, None, [], meta("postgres:15-alpine"), [DUMP], where=WHERE)  # type: ignore[arg-type]
    assert problems and "stop here" in problems[0]
    run = t.calls[0]
    assert run[:2] == ["docker", "run"] and run[-1] == "postgres:15-alpine"
    assert "bash" not in run and "-c" not in run
    assert t.calls[-1][:3] == ["docker", "rm", "-f"]  # removed whatever happened


def test_verify_deep_reports_a_forged_image_as_a_manifest_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private = PrivatePart(
        facts=HostFacts.decode({}, "x"),
        sources={"db": SourceEntry("db", "postgres", meta("evil/miner:latest"))},
        object_notes={},
    )
    monkeypatch.setattr(verify_module, "read_private", lambda m, ids: private)
    manifest = SimpleNamespace(
        host="prod",
        id="20250101T000000Z-abcd",
        sources=[SimpleNamespace(name="db", status="ok")],
        objects=[DUMP],
    )
    t = Recorder()
    t.close = lambda: None  # type: ignore[attr-defined]
    check = make_deep_check(HostConfig(name="h", address="h"), lambda h: t)  # type: ignore[arg-type,return-value]
    bad = check(manifest, None, [])  # type: ignore[arg-type]
    assert [(b.problem, b.source) for b in bad] == [("manifest", "db")]
    assert WHERE in bad[0].detail and "evil/miner:latest" in bad[0].detail
    assert t.calls == []
    with pytest.raises(UsageError):
        make_deep_check(HostConfig(name="h", address="h"), lambda h: t, "--privileged")  # type: ignore[arg-type,return-value]
