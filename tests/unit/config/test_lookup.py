"""The config lookup (issue 17): --config, then $VKBACKUP_CONFIG, then
./vkbackup.toml, then ~/.config/vkbackup/config.toml, then
/etc/vkbackup/vkbackup.toml; and what it says about where it looked.

Every test passes its own "system" path (or the test-only seam
$VKBACKUP_TEST_SYSTEM_CONFIG), so none depends on this machine's /etc."""

from __future__ import annotations

from pathlib import Path

import pytest

from vkbackup.config.load import (
    SYSTEM_CONFIG,
    SYSTEM_CONFIG_TEST_ENV,
    find_config_file,
    lookup_config_file,
)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """Empty cwd and home, and where each candidate file goes."""
    cwd, home, etc = tmp_path / "cwd", tmp_path / "home", tmp_path / "etc"
    for d in (cwd, home / ".config" / "vkbackup", etc):
        d.mkdir(parents=True)
    return {
        "cwd": cwd,
        "home": home,
        "local": cwd / "vkbackup.toml",
        "user": home / ".config" / "vkbackup" / "config.toml",
        "system": etc / "vkbackup.toml",
    }


def test_the_system_path_is_etc_vkbackup() -> None:
    assert Path("/etc/vkbackup/vkbackup.toml") == SYSTEM_CONFIG


def test_each_place_in_order(places: dict[str, Path]) -> None:
    cwd, home, system = places["cwd"], places["home"], places["system"]

    def found(explicit: str | None = None, env: dict[str, str] | None = None) -> Path | None:
        return find_config_file(explicit, env or {}, cwd, home, system)

    assert found() is None
    system.write_text("")
    assert found() == system  # the last resort: /etc/vkbackup/vkbackup.toml
    places["user"].write_text("")
    assert found() == places["user"]  # ~/.config/vkbackup/config.toml before /etc
    places["local"].write_text("")
    assert found() == places["local"]  # ./vkbackup.toml before ~/.config
    env = {"VKBACKUP_CONFIG": "/e.toml"}
    assert found(env=env) == Path("/e.toml")  # the variable before every file
    assert found("/x.toml", env) == Path("/x.toml")  # --config before everything


def test_named_files_are_chosen_even_if_missing(places: dict[str, Path]) -> None:
    places["local"].write_text("")
    got = lookup_config_file("/nope.toml", {}, places["cwd"], places["home"], places["system"])
    assert got.path == Path("/nope.toml") and got.found_by == "--config"
    got = lookup_config_file(
        None, {"VKBACKUP_CONFIG": "/nope.toml"}, places["cwd"], places["home"], places["system"]
    )
    assert got.path == Path("/nope.toml") and got.found_by == "$VKBACKUP_CONFIG"


def test_a_directory_is_not_a_config_file(places: dict[str, Path]) -> None:
    places["local"].mkdir()
    places["user"].write_text("")
    assert (
        find_config_file(None, {}, places["cwd"], places["home"], places["system"])
        == (places["user"])
    )


def test_it_says_where_it_looked_when_nothing_is_found(places: dict[str, Path]) -> None:
    got = lookup_config_file(None, {}, places["cwd"], places["home"], places["system"])
    assert got.path is None and got.found_by is None
    assert got.lines() == [
        "--config: not given",
        "$VKBACKUP_CONFIG: not set",
        f"./vkbackup.toml: {places['local']}: no such file",
        f"~/.config/vkbackup/config.toml: {places['user']}: no such file",
        f"/etc/vkbackup/vkbackup.toml: {places['system']}: no such file",
    ]


def test_it_says_which_place_found_the_file(places: dict[str, Path]) -> None:
    places["user"].write_text("")
    got = lookup_config_file(None, {}, places["cwd"], places["home"], places["system"])
    assert got.found_by == "~/.config/vkbackup/config.toml"
    assert got.lines()[-1] == f"~/.config/vkbackup/config.toml: {places['user']}: used"
    assert len(got.lines()) == 4  # /etc was not reached
    assert "no such file" in got.describe() and got.describe().count("; ") == 3


def test_the_test_only_seam_stands_in_for_etc(places: dict[str, Path]) -> None:
    places["system"].write_text("")
    env = {SYSTEM_CONFIG_TEST_ENV: str(places["system"])}
    got = lookup_config_file(None, env, places["cwd"], places["home"])
    assert got.path == places["system"] and got.found_by == "/etc/vkbackup/vkbackup.toml"
    missing = {SYSTEM_CONFIG_TEST_ENV: str(places["cwd"] / "absent.toml")}
    assert lookup_config_file(None, missing, places["cwd"], places["home"]).path is None
