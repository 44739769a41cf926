"""snapshot.compression: "auto" takes zstd where the host has it, else gzip; a named
compressor the host lacks is None (the snapshot refuses, naming the host)."""

from __future__ import annotations

import pytest

from vkbackup.sources.base import choose_compressor


@pytest.mark.parametrize(
    ("setting", "tools", "want"),
    [
        ("auto", ["zstd", "gzip", "tar"], "zstd"),
        ("auto", ["gzip", "tar"], "gzip"),
        ("gzip", ["zstd", "gzip"], "gzip"),
        ("zstd", ["zstd"], "zstd"),
        ("zstd", ["gzip"], None),
        ("gzip", ["zstd"], None),
        ("none", [], "none"),
    ],
)
def test_choose_compressor(setting: str, tools: list[str], want: str | None) -> None:
    assert choose_compressor(setting, tools) == want
