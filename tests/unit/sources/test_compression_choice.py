"""snapshot.compression: "auto" and "zstd" take the host's zstd where it has one, else
zstd on the backup machine (ZSTD_HERE, recorded as "zstd"); "gzip" is gzip on the host,
None when the host lacks it (the snapshot refuses, naming the host)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.sources.test_postgres_reuse import CFG, FakeHost
from vkbackup.sources import docker_image, files, host
from vkbackup.sources.base import (
    SUFFIX,
    ZSTD_HERE,
    PlanContext,
    choose_compressor,
    compress_stage,
    stored_compression,
)
from vkbackup.sources.postgres import PostgresSource


@pytest.mark.parametrize(
    ("setting", "tools", "want"),
    [
        ("auto", ["zstd", "gzip", "tar"], "zstd"),
        ("auto", ["gzip", "tar"], ZSTD_HERE),
        ("auto", [], ZSTD_HERE),
        ("gzip", ["zstd", "gzip"], "gzip"),
        ("zstd", ["zstd"], "zstd"),
        ("zstd", ["gzip"], ZSTD_HERE),
        ("gzip", ["zstd"], None),
        ("gzip", [], None),
        ("none", [], "none"),
    ],
)
def test_choose_compressor(setting: str, tools: list[str], want: str | None) -> None:
    assert choose_compressor(setting, tools) == want


def test_zstd_here_is_recorded_and_named_as_zstd() -> None:
    assert stored_compression(ZSTD_HERE) == "zstd"
    assert SUFFIX[ZSTD_HERE] == SUFFIX["zstd"] == ".zst"
    for kind in ("zstd", "gzip", "none"):
        assert stored_compression(kind) == kind


@pytest.mark.parametrize("kind", ["zstd", ZSTD_HERE, "gzip"])
def test_postgres_streams_are_never_compressed_by_the_snapshot(kind: str) -> None:
    """pg_dump -Fc compresses itself (compress_level, in the container) and globals are
    small SQL: both are stored as they come, whatever the compressor, so nothing
    compresses them again here (compression "none" is what `upload` checks)."""
    base = PostgresSource(CFG).plan(FakeHost(xids=["20"]), PlanContext("S2"))
    plan = PostgresSource(CFG).plan(FakeHost(xids=["20"]), PlanContext("S2", compressor=kind))
    assert [s.compression for s in plan.streams] == ["none", "none"]
    assert [(s.name, s.argv) for s in plan.streams] == [(s.name, s.argv) for s in base.streams]
    assert "-Fc" in " ".join(plan.streams[0].argv)


def test_tar_and_image_scripts_have_no_compress_stage_when_compressed_here() -> None:
    """Every tar and image script ends in compress_stage(ctx.compressor) (docker_volume's
    too): for ZSTD_HERE it is empty, the script the same as with "none"."""
    assert compress_stage(ZSTD_HERE) == compress_stage("none") == ""
    scripts: dict[str, Callable[[str], str]] = {
        "images": lambda k: docker_image.save_script(("app:1", "db:2"), k),
        "host": lambda k: host.tar_script("/tmp/list", k),
        "files": lambda k: files.tar_script(("/etc/app/*.conf",), k),
    }
    for name, build in scripts.items():
        here, none, on_host = build(ZSTD_HERE), build("none"), build("zstd")
        assert here == none, name
        assert "| zstd -q -T0 -3 -c" in on_host and "zstd" not in here, name
