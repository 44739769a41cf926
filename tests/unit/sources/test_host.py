"""The host source: parsing of what Debian tools print (realistic samples, hostile
names), the selection of files, the scripts (run here with hostile names: every
value stays data), the record, and the five restore handlers against a fake target."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from tests.realparts import require
from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, RestoreError, SnapshotError, TransportError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.objects import TarCheck
from vkbackup.restore.steps import (
    HostFilesParams,
    HostFirewallParams,
    HostGroup,
    HostPackagesParams,
    HostServicesParams,
    HostUser,
    HostUsersParams,
    Step,
    StepContext,
)
from vkbackup.sources import host, make_source
from vkbackup.sources.base import PlanContext, fingerprint_tag
from vkbackup.sources.files import MARK
from vkbackup.transport.base import Completed, Transport, pipeline_argv
from vkbackup.transport.local import LocalTransport

HOSTILE = ["a b", "new\nline", "$(touch PWNED)", "`touch PWNED`", "semi;colon", "qu'o\"te", "-n"]


def bash_ok(script: str) -> None:
    """The script parses (bash -n)."""
    res = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# -- parsing ----------------------------------------------------------------------

MANUAL = "caddy\ndocker-compose\ndocker.io\nlibc6\nufw\nwine32:i386\nrc-pkg\nfoo$(reboot)\n"
INSTALLED = (
    "ii \tcaddy\t2.6.2-12+deb13u1\tamd64\n"
    "ii \tdocker-compose\t2.26.1-4\tamd64\n"
    "ii \tdocker.io\t26.1.5+dfsg1-9+deb13u1+b1\tamd64\n"
    "ii \tlibc6:amd64\t2.41-12\tamd64\n"
    "ii \tlibc6:i386\t2.41-12\ti386\n"
    "ii \tufw\t0.36.2-9\tall\n"
    "ii \twine32:i386\t10.0~repack-6\ti386\n"
    "rc \trc-pkg\t1.0-1\tamd64\n"
    "iU \thalf\t1.0\tamd64\n"
    "ii \tfoo$(reboot)\t1.0\tamd64\n"
    "ii \tbad version\t1 0\tamd64\n"
)


def test_packages_join_showmanual_with_installed_versions() -> None:
    got = host.parse_packages(MANUAL, INSTALLED, "amd64")
    assert got == [
        host.Package("caddy", "2.6.2-12+deb13u1", "amd64"),
        host.Package("docker-compose", "2.26.1-4", "amd64"),
        host.Package("docker.io", "26.1.5+dfsg1-9+deb13u1+b1", "amd64"),
        host.Package("libc6", "2.41-12", "amd64"),  # native only: i386 was not marked
        host.Package("ufw", "0.36.2-9", "all"),
        host.Package("wine32", "10.0~repack-6", "i386"),
    ]
    # removed (rc) packages, hostile names and garbage are never recorded
    assert host.parse_packages("a b\n$(x)\n\n", "ii \ta b\t1\tamd64\n", "amd64") == []


def test_installed_keeps_only_installed_packages() -> None:
    got = host.parse_installed(INSTALLED)
    assert got[("libc6", "i386")] == "2.41-12"
    assert ("rc-pkg", "amd64") not in got
    assert ("half", "amd64") not in got  # unpacked, not configured: install it again
    assert not any("(" in n or " " in n for n, _ in got)


CONFFILES = (
    " /etc/adduser.conf cc3493ecd2d09837ffdcc3e25fdfff18\n"
    " /etc/deluser.conf 11a06baf8245fd8d690b99024d228c1f\n"
    "\n\n"
    " /etc/caddy/Caddyfile 4f1d84f7a4ac8a9ddb3cef4c5a8ac0d7\n"
    " /etc/old.conf 0123456789abcdef0123456789abcdef obsolete\n"
    " /etc/gone.conf 0123456789abcdef0123456789abcdef remove-on-upgrade obsolete\n"
    " /etc/never newconffile\n"
    " /etc/with space $(touch PWNED).conf aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
    "garbage line\n"
)


def test_conffiles_keep_spaces_in_paths_and_flags() -> None:
    got = host.parse_conffiles(CONFFILES)
    assert [c.path for c in got] == [
        "/etc/adduser.conf",
        "/etc/deluser.conf",
        "/etc/caddy/Caddyfile",
        "/etc/old.conf",
        "/etc/gone.conf",
        "/etc/with space $(touch PWNED).conf",
    ]
    assert got[3].obsolete and got[4].obsolete and not got[0].obsolete
    assert got[2].md5 == "4f1d84f7a4ac8a9ddb3cef4c5a8ac0d7"


UNITS = """caddy.service                      enabled enabled
containerd.service                 enabled enabled
docker.service                     enabled enabled
getty@.service                     enabled enabled
systemd-fsck@dev-disk-by\\x2dlabel-root.service enabled enabled
docker.socket                      enabled enabled
apt-daily.timer                    enabled enabled
remote-fs.target                   enabled enabled
$(reboot).service                  enabled enabled
a b.service                        enabled enabled
not-a-unit                         enabled enabled
"""


def test_unit_files_keep_valid_names_only() -> None:
    assert host.parse_unit_files(UNITS) == [
        "apt-daily.timer",
        "caddy.service",
        "containerd.service",
        "docker.service",
        "docker.socket",
        "getty@.service",
        "remote-fs.target",
        "systemd-fsck@dev-disk-by\\x2dlabel-root.service",
    ]
    assert host.parse_unit_files("b.service enabled enabled\n") == ["b.service"]
    assert host.parse_unit_files("") == []


PASSWD = """root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
caddy:x:995:995:Caddy web server:/var/lib/caddy:/usr/sbin/nologin
deploy:x:1001:1001:Deploy $(id),,,:/home/deploy:/bin/bash
+nisuser::::::
ev$(id):x:1002:1002::/home/ev:/bin/sh
a b:x:1003:1003::/home/ab:/bin/sh
short:x:1004
"""

GROUP = """root:x:0:
www-data:x:33:caddy
docker:x:102:deploy,$(id)
caddy:x:995:
deploy:x:1001:
nogroup:x:65534:
bad name:x:2000:
"""


def test_passwd_and_group_skip_hostile_and_malformed_lines() -> None:
    users = host.parse_passwd(PASSWD)
    assert [u.name for u in users] == ["root", "nobody", "caddy", "deploy"]
    assert users[3].gecos == "Deploy $(id),,,"  # data, kept as it is
    groups = host.parse_group(GROUP)
    assert [g.name for g in groups] == ["root", "www-data", "docker", "caddy", "deploy", "nogroup"]
    assert groups[2].members == ("deploy",)


MADISON = """     caddy | 2.6.2-12+deb13u1 | http://deb.debian.org/debian trixie/main amd64 Packages
     caddy |   2.6.2-12 | http://deb.debian.org/debian trixie/main amd64 Packages
     caddy |   2.6.2-12 | http://deb.debian.org/debian trixie/main Sources
 docker.io | 26.1.5+dfsg1-9+deb13u1+b1 | http://vklab-mirror/debian trixie/main amd64 Packages
 $(x) | 1 | http://evil trixie/main amd64 Packages
"""


def test_madison_lists_binary_versions() -> None:
    assert host.parse_madison(MADISON) == {
        "caddy": ["2.6.2-12+deb13u1", "2.6.2-12"],
        "docker.io": ["26.1.5+dfsg1-9+deb13u1+b1"],
    }


UFW_ACTIVE = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere                  
443/tcp                    ALLOW IN    Anywhere                  
10000:60000/udp            ALLOW IN    Anywhere                  
"""  # noqa: W291 - ufw pads its columns


def test_firewall_sections() -> None:
    fw = host.parse_firewall("ufw\n" + UFW_ACTIVE)
    assert fw.kind == "ufw" and fw.active
    assert "22/tcp                     ALLOW IN    Anywhere\n" in fw.status + "\n"
    assert not host.parse_firewall("ufw\nStatus: inactive\n").active
    assert host.parse_firewall("none\n") == host.Firewall("none", False, "")
    assert host.parse_firewall("rm -rf /\nx") == host.Firewall("none", False, "")
    saved = (
        "# Generated by iptables-save v1.8.11 (nf_tables) on Mon Nov 30 04:00:00 2026\n"
        "*filter\n:INPUT DROP [1234:56789]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
        "# Completed on Mon Nov 30 04:00:00 2026\n"
    )
    fw = host.parse_firewall("iptables\n" + saved)
    assert fw.active and fw.status == (
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT"
    )
    # a later read of the same rules (other counters, other date) compares equal
    later = saved.replace("[1234:56789]", "[99:1]").replace("04:00:00", "05:00:00")
    assert host.status_differences("iptables", fw.status, later) == []
    assert host.status_differences("ufw", UFW_ACTIVE, UFW_ACTIVE.replace("443", "8443")) == [
        "prod only: 443/tcp                    ALLOW IN    Anywhere",
        "target only: 8443/tcp                    ALLOW IN    Anywhere",
    ]


def test_sections_split() -> None:
    text = f"\n{host.SECTION} arch\namd64\n\n{host.SECTION} units\na.service x\n"
    assert host.split_sections(text) == {"arch": "amd64\n", "units": "a.service x\n"}


def test_candidates_and_stat_keep_any_name() -> None:
    data = b"modified\0/etc/a b\0etc\0/etc/new\nline\0owned\0/etc\0bogus-before-section\0"
    assert host.parse_candidates(b"/orphan\0" + data) == {
        "modified": ["/etc/a b"],
        "etc": ["/etc/new\nline"],
        "owned": ["/etc"],
        "bogus-before-section": [],
    }
    rec = b"\0".join([b"600", b"990", b"0", b"svc", b"root", b"7", b"1796014646", b"f",
                      b"ab" * 32, b"/etc/x $(id)\n\xff"]) + b"\0"  # fmt: skip
    (m,) = host.parse_stat(rec)
    assert m.path == "/etc/x $(id)\n\udcff" and m.uid == 990 and m.user == "svc"
    assert m.path.encode("utf-8", "surrogateescape").endswith(b"\n\xff")


def test_selection_owned_unowned_excluded_and_parents() -> None:
    found = {
        "etc": [
            "/etc/caddy/Caddyfile",  # owned, unmodified
            "/etc/wireguard/wg0.conf",  # unowned, below an unowned dir
            "/etc/hostname",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/systemd/system/multi-user.target.wants/x.service",
            "/etc/network/interfaces.d/50-cloud-init",
            "/etc/passwd-",
            "/etc/a b/$(touch PWNED)",
        ],
        "owned": ["/etc", "/etc/caddy", "/etc/caddy/Caddyfile", "/etc/ssh", "/etc/network"],
        "modified": ["/etc/ssh/sshd_config", "/etc/fstab"],
        "extra": ["/etc/ufw/user.rules", "/var/spool/cron/crontabs/deploy"],
        "data": ["/var/lib/caddy", "/var/lib/caddy/.local/share/caddy/x.key"],
        "patterns": ["/etc/hosts"],  # named explicitly: taken although excluded
    }
    assert host.select_paths(found) == [
        "/etc/a b",
        "/etc/a b/$(touch PWNED)",
        "/etc/hosts",
        "/etc/ssh/sshd_config",
        "/etc/ufw",
        "/etc/ufw/user.rules",
        "/etc/wireguard",
        "/etc/wireguard/wg0.conf",
        "/var/lib/caddy",
        "/var/lib/caddy/.local/share/caddy/x.key",
        "/var/spool/cron/crontabs/deploy",
    ]


def test_excludes() -> None:
    for p in ("/etc/ssh/ssh_host_rsa_key.pub", "/etc/machine-id", "/etc/shadow-",
              "/etc/ssl/certs/ca-certificates.crt", "/etc/docker/key.json",
              "/etc/systemd/system/sockets.target.requires/x.socket", "/etc/cloud/cloud.cfg",
              "/etc/security/opasswd", "/etc/netplan/50-cloud-init.yaml"):  # fmt: skip
        assert host.excluded(p), p
    for p in ("/etc/docker/daemon.json", "/etc/ssh/sshd_config", "/etc/hosts.allow"):
        assert not host.excluded(p), p


def test_apt_sources() -> None:
    yes = ("/etc/apt/sources.list", "/etc/apt/sources.list.d/docker.sources",
           "/etc/apt/keyrings/docker.asc", "/etc/apt/preferences.d/pin")  # fmt: skip
    no = ("/etc/apt/apt.conf.d/50unattended-upgrades", "/etc/apt/sources.listing")
    assert all(host.is_apt_source(p) for p in yes)
    assert not any(host.is_apt_source(p) for p in no)


def member(path: str, uid: int = 0, gid: int = 0, **kw: Any) -> host.Member:
    fields: dict[str, Any] = dict(type="f", mode="644", user="root", group="root", size=1,
                                  mtime=1, sha256="a" * 64)  # fmt: skip
    fields.update(kw)
    return host.Member(path=path, uid=uid, gid=gid, **fields)


def test_accounts_owners_regular_users_and_their_groups() -> None:
    members = [member("/var/lib/caddy/x", 995, 995), member("/etc/x", 0, 0)]
    users, groups = host.accounts_for(members, host.parse_passwd(PASSWD), host.parse_group(GROUP))
    assert [(u.name, u.uid, u.group) for u in users] == [
        ("caddy", 995, "caddy"),
        ("deploy", 1001, "deploy"),
    ]
    # www-data and docker: groups a recorded user belongs to; nogroup and root never
    assert [g.name for g in groups] == ["www-data", "docker", "caddy", "deploy"]


def test_fingerprint_moves_with_content_and_lists_not_order() -> None:
    a, b = member("/etc/a"), member("/etc/b")
    fp = host.host_fingerprint([a, b], {"packages": []})
    assert host.host_fingerprint([b, a], {"packages": []}) == fp
    assert host.host_fingerprint([a, b._replace(mtime=2)], {"packages": []}) != fp
    assert host.host_fingerprint([a, b._replace(sha256="b" * 64)], {"packages": []}) != fp
    assert host.host_fingerprint([a, b], {"packages": [["caddy", "1", "all"]]}) != fp


VERSION_PAIRS = [
    ("1.0", "1.0"), ("1.0~rc1", "1.0"), ("1:0.9", "2.0"), ("2.6.2-8", "2.6.2-9"),
    ("2.6.2-12", "2.6.2-12+deb13u1"), ("1.0-1", "1.0-1+b1"), ("1.0", "1.0-0"),
    ("26.1.5+dfsg1-9+deb13u1+b1", "26.1.5+dfsg1-9+deb13u1"), ("1.10", "1.9"),
    ("1.0a", "1.0+"), ("1.0~~", "1.0~"), ("0:1.2", "1.2"), ("1.2.3-1~bpo12+1", "1.2.3-1"),
    ("10.0p1-7+deb13u4", "10.0p1-7"), ("a", "b"), ("1.001", "1.1"),
]  # fmt: skip


def test_version_compare_matches_dpkg() -> None:
    sign = {True: 1, False: 0}
    for a, b in VERSION_PAIRS:
        got = host.version_compare(a, b)
        assert host.version_compare(b, a) * got <= 0 and (got == 0) == (
            host.version_compare(b, a) == 0
        )
        if shutil.which("dpkg") is None:
            continue
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
        assert (sign[got < 0], sign[got == 0]) == (sign[lt], sign[eq]), (a, b)


def test_install_plan_pins_offered_versions_and_never_downgrades() -> None:
    packages = [
        host.Package("caddy", "2.6.2-8", "amd64"),  # missing, offered: pinned
        host.Package("docker.io", "26.1.5-9", "amd64"),  # missing, not offered: candidate
        host.Package("ufw", "0.36.2-9", "all"),  # same: nothing
        host.Package("openssl", "3.5.1-1", "amd64"),  # newer here: kept
        host.Package("curl", "8.14.1-1", "amd64"),  # older here, offered: pinned upgrade
        host.Package("localdeb", "1.0", "amd64"),  # no source has it: reported
        host.Package("wine32", "10.0", "i386"),  # foreign arch: qualified
    ]
    installed = {
        ("ufw", "all"): "0.36.2-9",
        ("openssl", "amd64"): "3.5.1-1+deb13u1",
        ("curl", "amd64"): "8.14.1-0",
    }
    offered = {
        "caddy": ["2.6.2-9", "2.6.2-8"],
        "docker.io": ["26.1.5-10"],
        "openssl": ["3.5.1-1", "3.5.1-1+deb13u1"],
        "curl": ["8.14.1-1"],
        "wine32": ["10.0"],
    }
    plan = host.plan_install(packages, installed, offered, "amd64")
    assert plan.install == ["caddy=2.6.2-8", "docker.io", "curl=8.14.1-1", "wine32:i386=10.0"]
    assert plan.pinned == 3
    assert plan.notes == [
        "localdeb: prod 1.0, not offered by the target's apt sources: not installed"
    ]
    after = {**installed, ("caddy", "amd64"): "2.6.2-8", ("docker.io", "amd64"): "26.1.5-10"}
    assert host.version_differences(packages[:4], after, "amd64") == [
        "docker.io: prod 26.1.5-9, target 26.1.5-10",
        "openssl: prod 3.5.1-1, target 3.5.1-1+deb13u1",
    ]


def test_install_argv_is_noninteractive_and_keeps_config() -> None:
    argv = host.install_argv(["caddy=2.6.2-8"])
    assert argv[:2] == ["env", "DEBIAN_FRONTEND=noninteractive"]
    # needrestart must not restart Docker while the images stream in beside it
    assert "NEEDRESTART_SUSPEND=1" in argv[:4] and "LC_ALL=C" in argv[:4]
    assert "Dpkg::Options::=--force-confold" in argv and "Dpkg::Options::=--force-confdef" in argv
    assert argv[-1] == "caddy=2.6.2-8"


def test_account_plan_uses_free_ids_reports_clashes_never_changes_existing() -> None:
    groups = (
        HostGroup("docker", 102, ("deploy",)),
        HostGroup("caddy", 995),
        HostGroup("deploy", 1001),
        HostGroup("ops", 1002, ("deploy",)),
    )
    users = (
        HostUser("caddy", 995, 995, "caddy", "Caddy web server", "/var/lib/caddy", "/sbin/nologin"),
        HostUser("deploy", 1001, 1001, "deploy", "Deploy $(id),,,", "/home/deploy", "/bin/bash"),
        HostUser("svc", 990, 990, None, "", "/nonexistent", "/usr/sbin/nologin"),
    )
    have_users = [
        host.Account("caddy", 994, 994, "", "/var/lib/caddy", "/sbin/nologin"),
        host.Account("sshd", 990, 65534, "", "/run/sshd", "/usr/sbin/nologin"),
    ]
    have_groups = [host.Group("docker", 989, ()), host.Group("caddy", 994, ()),
                   host.Group("ops2", 1002, ())]  # fmt: skip
    plan = host.plan_accounts(groups, users, have_users, have_groups)
    assert plan.commands == [
        ["groupadd", "-g", "1001", "--", "deploy"],
        ["groupadd", "--", "ops"],
        ["useradd", "-u", "1001", "-g", "deploy", "-G", "docker,ops", "-c", "Deploy $(id),,,",
         "-d", "/home/deploy", "-s", "/bin/bash", "-m", "--", "deploy"],
        ["useradd", "-r", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-M", "--", "svc"],
    ]  # fmt: skip
    assert plan.notes == [
        "group docker: exists with gid 989 (prod 102): kept",
        "group caddy: exists with gid 994 (prod 995): kept",
        "group ops: gid 1002 is ops2's here: created with another gid",
        "user caddy: exists with uid 994 (prod 995): kept",
        "user svc: uid 990 is sshd's here: created with another uid",
    ]
    # a second run finds everything: nothing to do
    again = host.plan_accounts(
        groups,
        users,
        [*have_users, host.Account("deploy", 1001, 1001, "", "", ""),
         host.Account("svc", 989, 989, "", "", "")],
        [*have_groups, host.Group("deploy", 1001, ()), host.Group("ops", 1003, ())],
    )  # fmt: skip
    assert again.commands == []


def test_units() -> None:
    have = {"caddy.service", "getty@.service", "docker.socket"}
    assert host.unit_present("getty@tty1.service", have)
    assert host.unit_present("caddy.service", have)
    assert not host.unit_present("vk.service", have)
    assert host.unit_name("caddy") == "caddy.service"
    assert host.unit_name("docker.socket") == "docker.socket"
    assert host.units_to_restart(
        ["/etc/docker/daemon.json", "/etc/systemd/system/docker.service.d/x.conf",
         "/etc/caddy/Caddyfile", "/etc/containerd/config.toml"]
    ) == {
        "containerd.service": ["/etc/containerd/config.toml"],
        "docker.service": ["/etc/docker/daemon.json",
                           "/etc/systemd/system/docker.service.d/x.conf"],
    }  # fmt: skip


# -- the record -------------------------------------------------------------------


def meta_doc() -> dict[str, Any]:
    return {
        "packages": [{"name": "caddy", "version": "2.6.2-8", "arch": "amd64"}],
        "units": ["caddy.service", "getty@.service"],
        "firewall": {"kind": "ufw", "active": True, "status": "Status: active"},
        "users": [{"name": "deploy", "uid": 1001, "gid": 1001, "group": "deploy",
                   "gecos": "", "home": "/home/deploy", "shell": "/bin/bash"}],
        "groups": [{"name": "docker", "gid": 102, "members": ["deploy"]}],
        "members": [{"path": "/etc/apt/sources.list.d/debian.sources"},
                    {"path": "/etc/caddy/Caddyfile"}, {"path": "/var/lib/caddy"}],
        "restart": ["caddy"],
        "secret": True,
    }  # fmt: skip


def test_meta_decodes_and_gives_six_steps_in_order() -> None:
    meta = host.Meta.decode(meta_doc(), "m: sources.host.meta")
    assert meta.apt_sources == ("/etc/apt/sources.list.d/debian.sources",)
    tar = ObjectRecord(key="k", source="host", name="host.tar.gz.age", role="tar", size=1,
                       sha256="0" * 64, compression="gzip")  # fmt: skip
    steps = host.restore_steps("host", meta, [tar])
    assert [s.kind for s in steps] == [
        "host-packages", "host-users", "host-packages", "host-files", "host-services",
        "host-firewall",
    ]  # fmt: skip
    assert [s.id for s in steps[:3]] == [
        "host-packages:host:docker", "host-users:host", "host-packages:host",
    ]  # fmt: skip
    assert all(s.resumable and s.source == "host" for s in steps)
    assert [len(s.objects) for s in steps] == [1, 0, 0, 1, 0, 0]
    docker, pk = steps[0].params, steps[2].params
    assert isinstance(docker, HostPackagesParams) and isinstance(pk, HostPackagesParams)
    # Docker's packages carry the apt sources; the rest install beside the data
    assert docker.docker and docker.packages == () and docker.sources == meta.apt_sources
    assert len(docker.members) == 3
    assert not pk.docker and pk.packages == (("caddy", "2.6.2-8", "amd64"),) and not pk.sources
    assert steps[1].params == HostUsersParams(
        groups=(HostGroup("docker", 102, ("deploy",)),),
        users=(HostUser("deploy", 1001, 1001, "deploy", "", "/home/deploy", "/bin/bash"),),
    )
    assert steps[3].params == HostFilesParams(members=meta.members)
    assert steps[4].params == HostServicesParams(units=meta.units, restart=("caddy",))
    assert steps[5].params == HostFirewallParams(
        firewall="ufw", active=True, status="Status: active"
    )
    # no path and no secret in any title (titles are shown and logged)
    assert not any("/" in s.title for s in steps)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["packages"][0].update(name="a b"), "packages[0]"),
        (lambda d: d["packages"][0].update(version=3), "packages[0].version"),
        (lambda d: d.update(units="caddy.service"), "units"),
        (lambda d: d.update(units=["$(id).service"]), "units"),
        (lambda d: d["users"][0].update(uid="1001"), "users[0].uid"),
        (lambda d: d["users"][0].update(uid=True), "users[0].uid"),
        (lambda d: d["users"][0].update(name="ev$(id)"), "not an account name"),
        (lambda d: d["groups"][0].update(members="deploy"), "groups[0].members"),
        (lambda d: d["firewall"].update(kind="pf"), "firewall.kind"),
        (lambda d: d["members"].append({"path": "etc/relative"}), "members"),
        (lambda d: d["members"].append({"name": "/x"}), "members[3].path"),
        (lambda d: d.update(restart=[1]), "restart"),
    ],
)
def test_meta_errors_name_the_field(change: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = meta_doc()
    change(doc)
    with pytest.raises(IntegrityError) as exc:
        host.Meta.decode(doc, "m: sources.host.meta")
    assert str(exc.value).startswith("m: sources.host.meta")
    assert field in str(exc.value)


def test_records_know_the_host_type() -> None:
    from vkbackup.restore.records import decode_private

    private = decode_private(
        {"sources": {"host": {"type": "host", "meta": meta_doc()}}}, "manifest"
    )
    assert isinstance(private.sources["host"].meta, host.Meta)


# -- the scripts, run here with hostile names -----------------------------------------


def hostile_tree(root: Path) -> list[str]:
    """A directory with hostile names below it; return every path made."""
    made = [str(root)]
    for n in HOSTILE:
        d = root / ("d " + n)
        d.mkdir()
        (d / n).write_text("x")
        made += [str(d), str(d / n)]
    (root / "link").symlink_to("/etc/passwd")
    made.append(str(root / "link"))
    return sorted(made)


def test_scripts_parse_with_hostile_values() -> None:
    bash_ok(host.INVENTORY)
    bash_ok(host.candidates_script(["/x/" + n for n in HOSTILE], ["/y/" + n for n in HOSTILE]))
    for n in HOSTILE:
        bash_ok(host.stat_script("/l/" + n))
        bash_ok(host.tar_script("/l/" + n, "zstd"))
        bash_ok(host.extract_script("gzip", ["/etc/" + n], root="/r/" + n))
    for kind in ("ufw", "nftables", "iptables"):
        bash_ok(host.arm_rollback_script(kind))
    for s in (host.RECOVER, host.INSTALLED, host.CANCEL_ROLLBACK, host.AFTER_FILES,
              host.CONFIG_DIGEST, host.ENABLE, host.RESTART):  # fmt: skip
        bash_ok(s)


def test_extract_script_quotes_names_and_maps_owners_by_name() -> None:
    script = host.extract_script("gzip", ["/etc/" + n for n in HOSTILE])
    assert "--numeric-owner" not in script
    assert "--same-owner" in script and " -xpf - " in script
    words = shlex.split(script)
    assert words[-len(HOSTILE) :] == ["etc/" + n for n in HOSTILE]
    # without names: every member (the tar guard holds the list)
    assert host.extract_script("none").endswith("--same-owner")


def test_snapshot_scripts_on_a_hostile_tree(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        root = tmp_path / "data"
        root.mkdir()
        made = hostile_tree(root)
        t = LocalTransport()
        res = t.run(
            pipeline_argv(host.candidates_script([str(root / "d a b")], [str(root)])),
            input=host.conffile_input(
                [host.Conffile(str(root / "d a b" / "a b"), "0" * 32, False)]
            ),
        )
        found = host.parse_candidates(res.stdout)
        assert sorted(found["data"]) == made
        assert found["modified"] == [str(root / "d a b" / "a b")]  # md5 differs
        assert sorted(found["patterns"]) == [str(root / "d a b"), str(root / "d a b" / "a b")]
        lst = str(tmp_path / "lists" / "S-host.list")
        st = t.run(pipeline_argv(host.stat_script(lst)),
                   input=b"".join(p.encode() + b"\0" for p in made))  # fmt: skip
        members = host.parse_stat(st.stdout)
        assert [m.path for m in members] == made
        assert {m.type for m in members} == {"d", "f", "l"}
        assert Path(lst).read_bytes() == b"".join(p[1:].encode() + b"\0" for p in made)
        assert oct(Path(lst).stat().st_mode)[-3:] == "600"
        out = t.run(pipeline_argv(host.tar_script(lst, "gzip")))
        with tarfile.open(fileobj=io.BytesIO(out.stdout), mode="r:gz") as tf:
            assert sorted("/" + n for n in tf.getnames()) == made
            assert tf.getmember(made[-1][1:]).issym()
        assert not Path(lst).exists()  # the tar removes its list
        # and it goes back, only named members, below a root of our choosing
        dest = tmp_path / "dest"
        dest.mkdir()
        names = [p for p in made if p.endswith("$(touch PWNED)")]
        t.run(pipeline_argv(host.extract_script("gzip", names, root=str(dest))),
              input=out.stdout)  # fmt: skip
        restored = sorted(str(p) for p in dest.rglob("*") if p.is_file())
        assert len(names) == 2  # a directory and a file below it: each extracted once
        assert restored == [str(dest) + n for n in names if Path(n).is_file()]
        assert (dest / names[0][1:]).is_dir()
        missing = t.run(
            pipeline_argv(host.candidates_script([str(tmp_path / "nothing*")], [])),
            check=False,
        )
        assert missing.status == 3 and MARK in missing.stderr
        assert not list(tmp_path.rglob("PWNED")) and not Path(cwd, "PWNED").exists()
    finally:
        os.chdir(cwd)


def test_rollback_guard_runs_only_while_the_flag_exists(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    undone = tmp_path / "undone"
    script = host.arm_rollback_script("ufw", 60)
    guard = next(ln for ln in script.splitlines() if "systemd-run --quiet" in ln)
    assert "--on-active=60" in guard and "--unit=vkbackup-fw-rollback" in guard
    assert "AccuracySec=1s" in script and "setsid bash -c" in script
    undo = f"if [ -e {flag} ]; then rm -f {flag}; touch {undone}; fi"
    flag.touch()
    subprocess.run(["bash", "-c", undo], check=True)
    assert undone.exists() and not flag.exists()
    undone.unlink()
    subprocess.run(["bash", "-c", undo], check=True)  # cancelled: the flag is gone
    assert not undone.exists()


def test_inventory_runs_here() -> None:
    if shutil.which("dpkg-query") is None:
        require("dpkg-query missing (a Debian machine runs the host source's inventory)")
    res = LocalTransport().run(host.inventory_argv())
    sec = host.split_sections(res.stdout.decode("utf-8", "surrogateescape"))
    assert set(sec) == {"arch", "manual", "installed", "conffiles", "units", "firewall",
                        "passwd", "group"}  # fmt: skip
    arch = sec["arch"].strip()
    assert arch and host.parse_packages(sec["manual"], sec["installed"], arch)
    assert host.parse_conffiles(sec["conffiles"])
    assert any(a.name == "root" for a in host.parse_passwd(sec["passwd"]))
    assert host.parse_firewall(sec["firewall"]).kind in host.FIREWALL_KINDS


def test_plan_and_stream_here_then_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole snapshot half on this machine (read-only but for the list file)."""
    if shutil.which("dpkg-query") is None:
        require("dpkg-query missing (a Debian machine runs the host source's inventory)")
    monkeypatch.setattr(host, "LIST_DIR", str(tmp_path / "lists"))
    data = tmp_path / "caddy"
    data.mkdir()
    made = hostile_tree(data)
    cfg = SourceConfig(
        type="host",
        name="host",
        where="hosts.t.sources[0]",
        paths=("/etc/os-releas?",),
        data_dirs=(str(data), "/nonexistent"),
    )
    src = make_source(cfg)
    assert isinstance(src, host.HostSource)
    t = LocalTransport()
    plan = src.plan(t, PlanContext(snapshot_id="S1", compressor="gzip"))
    (stream,) = plan.streams
    assert stream.name == "host.tar.gz" and stream.role == "tar" and stream.fingerprint
    meta = plan.meta
    paths = [m["path"] for m in meta["members"]]
    assert set(made) <= set(paths) and "/etc/os-release" in paths
    assert not any(host.excluded(p) for p in paths if p.startswith("/etc/"))
    assert meta["secret"] is True and meta["restart"] == ["caddy"]
    out = t.run(stream.argv)
    with tarfile.open(fileobj=io.BytesIO(out.stdout), mode="r:gz") as tf:
        names = tf.getnames()
        assert sorted("/" + n for n in names) == sorted(paths)
        owner = tf.getmember(made[1][1:])
        assert owner.uname == "root" and owner.uid == 0  # names and ids both
    decoded = host.Meta.decode(meta, "m")
    assert decoded.members == tuple(paths)
    # unchanged: the same fingerprint; an earlier object with it is referenced, not run
    earlier = ObjectRecord(key="old", source="host", name="host.tar.gz.age", role="tar", size=1,
                           sha256="0" * 64, compression="gzip",
                           fingerprint=fingerprint_tag(stream.fingerprint))  # fmt: skip
    again = src.plan(t, PlanContext(snapshot_id="S2", compressor="gzip", previous=(earlier,)))
    assert again.streams[0].fingerprint == stream.fingerprint
    assert again.streams[0].argv == []
    assert not list((tmp_path / "lists").iterdir())


def test_plan_names_a_pattern_that_matches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("dpkg-query") is None:
        require("dpkg-query missing (a Debian machine runs the host source's inventory)")
    monkeypatch.setattr(host, "LIST_DIR", str(tmp_path))
    cfg = SourceConfig(type="host", name="host", where="hosts.t.sources[2]",
                       paths=(str(tmp_path / "typo*"),), data_dirs=())  # fmt: skip
    with pytest.raises(SnapshotError) as exc:
        host.HostSource(cfg).plan(LocalTransport(), PlanContext(snapshot_id="S1"))
    assert "hosts.t.sources[2].paths" in str(exc.value) and "typo*" in str(exc.value)


# -- the handlers, against a fake target --------------------------------------------

Answer = tuple[int, str, str]  # status, stdout, stderr


@dataclass
class FakeTarget:
    """Answers each command by the first rule whose text occurs in it."""

    rules: list[tuple[str, Answer | Callable[[], Answer]]]
    name: str = "root@203.0.113.9:22"
    calls: list[tuple[list[str], bytes]] = field(default_factory=list)
    closed: bool = False

    def run(
        self, argv: list[str], *, input: bytes = b"", check: bool = True, timeout: Any = None
    ) -> Completed:
        self.calls.append((argv, input))
        text = " ".join(argv)
        for needle, answer in self.rules:
            if needle in text:
                status, out, err = answer() if callable(answer) else answer
                if check and status != 0:
                    raise TransportError(f"{self.name}: {needle} failed: {err}")
                return Completed(argv, status, out.encode(), err)
        return Completed(argv, 0, b"", "")

    def close(self) -> None:
        self.closed = True

    def ran(self, needle: str) -> list[list[str]]:
        return [a for a, _ in self.calls if needle in " ".join(a)]


@dataclass
class FakeCtx:
    t: FakeTarget
    verified: list[str] = field(default_factory=list)
    fed: list[tuple[list[str], TarCheck | None]] = field(default_factory=list)

    def feed(
        self, obj: ObjectRecord, make_argv: Callable[[str], list[str]], *, tar: Any = None
    ) -> None:
        self.fed.append((make_argv("gzip"), tar))
        self.t.calls.append((["<feed>", *make_argv("gzip")], b""))


def ctx_of(fake: FakeCtx) -> StepContext:
    return cast(StepContext, fake)


def transport(t: FakeTarget) -> Transport:
    return cast(Transport, t)


TAR = ObjectRecord(key="k", source="host", name="host.tar.gz.age", role="tar", size=1,
                   sha256="0" * 64, compression="gzip")  # fmt: skip
MEMBERS = ("/etc/apt/keyrings/docker.asc", "/etc/apt/sources.list.d/a b.sources",
           "/etc/caddy/Caddyfile", "/var/lib/caddy")  # fmt: skip


def test_packages_step_order_pins_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    installs: list[int] = []
    installed_before = "amd64\nii \tufw\t0.36.2-9\tall\nii \tcurl\t8.15.0-1\tamd64\n"
    installed_after = installed_before + "ii \tcaddy\t2.6.2-9\tamd64\n"

    def listing() -> Answer:
        return (0, installed_after if installs else installed_before, "")

    def install() -> Answer:
        installs.append(1)
        return (0, "", "")

    t = FakeTarget([
        ("--configure -a", (0, "", "")),
        ("update", (100, "", "E: Failed to fetch http://mirror/x\n")),
        ("dpkg --print-architecture", listing),
        ("madison", (0, " caddy | 2.6.2-9 | http://m trixie/main amd64 Packages\n", "")),
        ("apt-get install", install),
    ])  # fmt: skip
    fake = FakeCtx(t)
    params = HostPackagesParams(
        packages=(("caddy", "2.6.2-8", "amd64"), ("ufw", "0.36.2-9", "all"),
                  ("curl", "8.14.1-1", "amd64")),
        sources=MEMBERS[:2],
        members=MEMBERS,
    )  # fmt: skip
    text = host.restore_packages(
        ctx_of(fake), Step("host-packages:host", "t", params, "host", [TAR])
    )
    order = [" ".join(a) for a, _ in t.calls]
    assert "--configure -a" in order[0]  # a killed install is finished first
    assert order[1].startswith("<feed>")  # then prod's apt sources and keys
    assert "dpkg --print-architecture" in order[2]  # what is there decides
    assert "update" in order[3]  # caddy is older here: the mirror is asked
    (argv, check) = fake.fed[0]
    assert check == TarCheck.files(MEMBERS)  # the guard allows every member
    assert shlex.split(argv[2].split("\n", 1)[1])[-2:] == [
        "etc/apt/keyrings/docker.asc", "etc/apt/sources.list.d/a b.sources",
    ]  # fmt: skip
    (inst,) = t.ran("apt-get install")
    assert inst[-1] == "caddy"  # 2.6.2-8 not offered: the candidate
    assert "curl" not in " ".join(inst)  # newer here: kept
    assert "caddy: prod 2.6.2-8, target 2.6.2-9" in text
    assert "curl: prod 8.14.1-1, target 8.15.0-1" in text
    assert "apt-get update reported errors" in text
    assert "package version differs: caddy: prod 2.6.2-8, target 2.6.2-9" in fake.verified


def test_packages_step_falls_back_to_candidates_then_fails_clearly() -> None:
    t = FakeTarget([
        ("dpkg --print-architecture", (0, "amd64\n", "")),
        ("madison", (0, " caddy | 2.6.2-8 | http://m trixie/main amd64 Packages\n", "")),
        ("apt-get install", (100, "", "E: Unmet dependencies")),
    ])  # fmt: skip
    params = HostPackagesParams(packages=(("caddy", "2.6.2-8", "amd64"),))
    with pytest.raises(RestoreError) as exc:
        host.restore_packages(ctx_of(FakeCtx(t)), Step("p", "t", params, "host", [TAR]))
    assert "apt-get install failed" in str(exc.value) and t.name in str(exc.value)
    assert [a[-1] for a in t.ran("apt-get install")] == ["caddy=2.6.2-8", "caddy"]


def test_users_step_creates_then_checks() -> None:
    created: list[str] = []

    def passwd() -> Answer:
        return (0, "root:x:0:0::/root:/bin/bash\n" + "".join(created), "")

    def useradd() -> Answer:
        created.append("deploy:x:1001:1001::/home/deploy:/bin/bash\n")
        return (0, "", "")

    t = FakeTarget([("getent passwd", passwd), ("getent group", (0, "deploy:x:1001:\n", "")),
                    ("useradd", useradd)])  # fmt: skip
    params = HostUsersParams(
        groups=(HostGroup("deploy", 1001),),
        users=(HostUser("deploy", 1001, 1001, "deploy", "", "/home/deploy", "/bin/bash"),),
    )
    text = host.restore_users(ctx_of(FakeCtx(t)), Step("u", "t", params, "host"))
    assert text == "1 accounts created"
    created.clear()
    t.rules[2] = ("useradd", (0, "", ""))  # says it worked, but nothing appears
    with pytest.raises(RestoreError, match="still missing after creating them: deploy"):
        host.restore_users(ctx_of(FakeCtx(t)), Step("u", "t", params, "host"))


def test_files_step_guards_extracts_by_name_restarts_changed_config() -> None:
    digests = iter([(0, "aaa", ""), (0, "bbb", "")])
    t = FakeTarget([("sha256sum", lambda: next(digests)),
                    ("daemon-reload", (0, "docker.service\n", ""))])  # fmt: skip
    members = (*MEMBERS, "/etc/docker/daemon.json")
    fake = FakeCtx(t)
    text = host.restore_host_files(ctx_of(fake), Step("f", "t", HostFilesParams(members), "host",
                                                      [TAR]))  # fmt: skip
    (argv, check) = fake.fed[0]
    assert check == TarCheck.files(members)
    assert argv[2].endswith("gzip -d -c | tar -C / -xpf - --same-owner")
    (after,) = t.ran("daemon-reload")
    assert after[-1] == "docker.service"
    assert "restarted docker.service" in text
    # unchanged configuration: nothing restarted
    t2 = FakeTarget([("sha256sum", (0, "same", ""))])
    host.restore_host_files(ctx_of(FakeCtx(t2)), Step("f", "t", HostFilesParams(members), "host"))
    (after,) = t2.ran("daemon-reload")
    assert after[-1] == "vkbackup"  # $0 only: no unit to restart


def test_docker_config_is_put_by_its_own_step_which_extracts_only_it() -> None:
    doc = meta_doc()
    doc["packages"] += [
        {"name": n, "version": "1", "arch": "amd64"}
        for n in ("docker.io", "containerd", "runc", "docker-compose-plugin")
    ]
    doc["members"] += [{"path": "/etc/docker/daemon.json"},
                       {"path": "/etc/containerd/config.toml"}]  # fmt: skip
    meta = host.Meta.decode(doc, "m")
    steps = host.restore_steps("h", meta, [TAR])
    assert [s.id for s in steps[:4]] == [
        "host-packages:h:docker", "host-users:h", "host-files:h:docker", "host-packages:h",
    ]  # fmt: skip
    docker, _, daemon, rest = (s.params for s in steps[:4])
    assert isinstance(docker, HostPackagesParams) and isinstance(rest, HostPackagesParams)
    assert [p[0] for p in docker.packages] == [
        "docker.io", "containerd", "runc", "docker-compose-plugin",
    ]  # fmt: skip
    assert [p[0] for p in rest.packages] == ["caddy"]
    assert daemon == HostFilesParams(
        members=meta.members, only=("/etc/docker/daemon.json", "/etc/containerd/config.toml")
    )
    # the step extracts those two by name (the guard still knows every member) and
    # restarts the daemons whose configuration changed
    digests = iter([(0, "a", ""), (0, "a", ""), (0, "b", ""), (0, "a", "")])
    t = FakeTarget([("sha256sum", lambda: next(digests)),
                    ("daemon-reload", (0, "docker.service\n", ""))])  # fmt: skip
    fake = FakeCtx(t)
    text = host.restore_host_files(ctx_of(fake), Step("f", "t", daemon, "h", [TAR]))
    (argv, check) = fake.fed[0]
    assert check == TarCheck.files(meta.members)
    assert argv[2].endswith("--no-recursion -- etc/docker/daemon.json etc/containerd/config.toml")
    (after,) = t.ran("daemon-reload")
    assert after[-1] == "containerd.service"  # its digest changed: "a" -> "b"
    assert text.startswith("2 paths")


@pytest.mark.parametrize(
    ("name", "docker"),
    [("docker.io", True), ("docker-ce", True), ("docker-ce-cli", True), ("docker-cli", True),
     ("docker-compose", True), ("docker-compose-plugin", True), ("docker-buildx-plugin", True),
     ("containerd", True), ("containerd.io", True), ("runc", True), ("moby-engine", True),
     ("caddy", False), ("ufw", False), ("python3-docker", False), ("containerd-shim", False),
     ("runc-doc", False)],
)  # fmt: skip
def test_docker_packages_are_told_from_the_rest(name: str, docker: bool) -> None:
    assert host.is_docker_package(name) is docker


def test_packages_step_skips_apt_when_nothing_is_missing_or_older() -> None:
    t = FakeTarget([
        ("dpkg --print-architecture", (0, "amd64\nii \tcaddy\t2.6.2-9\tamd64\n", "")),
    ])  # fmt: skip
    params = HostPackagesParams(packages=(("caddy", "2.6.2-8", "amd64"),))
    text = host.restore_packages(ctx_of(FakeCtx(t)), Step("p", "t", params, "host"))
    assert not t.ran("update") and not t.ran("madison") and not t.ran("apt-get install")
    assert "0 installed" in text and "caddy: prod 2.6.2-8, target 2.6.2-9" in text


def test_services_step_enables_reports_and_never_restarts_a_firewall() -> None:
    t = FakeTarget([
        ("list-unit-files", (0, "caddy.service enabled enabled\ngetty@.service enabled e\n"
                                "ufw.service enabled enabled\n", "")),
        ("systemctl enable", (0, "getty@.service\tFailed to enable unit: Unit "
                                 "/etc/systemd/system/getty@tty1.service is masked.\n", "")),
    ])  # fmt: skip
    params = HostServicesParams(units=("caddy.service", "getty@.service", "vk.service"),
                                restart=("caddy", "ufw", "janus"))  # fmt: skip
    fake = FakeCtx(t)
    text = host.restore_services(ctx_of(fake), Step("s", "t", params, "host"))
    (enable,) = t.ran("systemctl enable")
    assert enable[-2:] == ["caddy.service", "getty@.service"]
    restarts = t.ran("systemctl restart")
    assert [a[-1] for a in restarts] == ["caddy.service"]
    assert "not on the target: vk.service" in text
    assert "masked on the target (left masked): getty@.service" in text
    assert "ufw.service (the firewall step applies it)" in text
    assert "janus.service (not installed)" in text
    t.rules.append(("systemctl restart", (1, "", "Job for caddy.service failed")))
    with pytest.raises(RestoreError, match=r"caddy\.service did not start"):
        host.restore_services(ctx_of(FakeCtx(t)), Step("s", "t", params, "host"))
    t.rules[1] = ("systemctl enable", (0, "vk2.service\tFailed: no [Install]\n", ""))
    with pytest.raises(RestoreError, match=r"cannot enable: vk2\.service: Failed"):
        host.restore_services(ctx_of(FakeCtx(t)), Step("s", "t", params, "host"))
    no_systemd = FakeTarget([("test -d /run/systemd/system", (1, "", ""))])
    with pytest.raises(RestoreError, match="systemd is not running"):
        host.restore_services(ctx_of(FakeCtx(no_systemd)), Step("s", "t", params, "host"))


FW = HostFirewallParams(firewall="ufw", active=True, status=UFW_ACTIVE)


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep in host does not sleep: it records and advances a fake clock."""
    clock = [1000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    return slept


def test_firewall_arms_applies_confirms_over_a_new_connection(no_wait: list[float]) -> None:
    t = FakeTarget([])
    t2 = FakeTarget([("ufw status verbose", (0, UFW_ACTIVE, ""))])
    fake = FakeCtx(t)
    text = host.restore_firewall(ctx_of(fake), Step("fw", "t", FW, "host"), lambda: transport(t2))
    first = [" ".join(a) for a, _ in t.calls]
    assert "systemd-run" in first[0] and "touch /run/vkbackup-fw-rollback.pending" in first[0]
    assert first[1] == "env LC_ALL=C ufw --force enable"
    assert len(first) == 2  # nothing else on the old connection
    second = [" ".join(a) for a, _ in t2.calls]
    assert "rm -f /run/vkbackup-fw-rollback.pending" in second[0]  # cancelled by the NEW one
    assert "ufw status verbose" in second[1] and t2.closed
    assert "confirmed over a new SSH connection" in text
    assert "firewall: ufw status equals prod's" in fake.verified
    assert no_wait == []


def test_firewall_without_a_new_connection_waits_for_the_rollback(no_wait: list[float]) -> None:
    t = FakeTarget([])
    attempts: list[int] = []

    def reconnect() -> Transport:
        attempts.append(1)
        if len(attempts) <= host.RECONNECT_TRIES:
            raise TransportError("timed out connecting")
        return transport(FakeTarget([("test -e", (1, "", ""))]))  # the flag is gone

    with pytest.raises(RestoreError) as exc:
        host.restore_firewall(ctx_of(FakeCtx(t)), Step("fw", "t", FW, "host"), reconnect)
    msg = str(exc.value)
    assert msg.startswith(t.name) and "no new SSH connection" in msg
    assert "rolled back and the target is reachable again" in msg
    assert sum(no_wait) >= host.ROLLBACK_SECONDS  # waited for the rollback to be due
    assert len(attempts) == host.RECONNECT_TRIES + 1
    assert not t.ran("systemctl stop vkbackup-fw-rollback.timer >/dev/null 2>&1 || true\n")


def test_firewall_failures_are_named(no_wait: list[float]) -> None:
    # the rollback ran before the new connection came
    late = FakeTarget([("the firewall rollback already ran", (3, "", "already ran"))])
    with pytest.raises(RestoreError, match="the rollback ran before"):
        host.restore_firewall(ctx_of(FakeCtx(FakeTarget([]))), Step("fw", "t", FW, "host"),
                              lambda: transport(late))  # fmt: skip
    # confirmed, but the rules are not prod's
    other = FakeTarget([("ufw status verbose", (0, UFW_ACTIVE.replace("443", "444"), ""))])
    with pytest.raises(RestoreError, match="differ from prod's: prod only: 443/tcp"):
        host.restore_firewall(ctx_of(FakeCtx(FakeTarget([]))), Step("fw", "t", FW, "host"),
                              lambda: transport(other))  # fmt: skip
    # applying failed: undone at once, no reconnect needed
    bad = FakeTarget([("ufw --force enable", (1, "", "ERROR: problem running"))])
    with pytest.raises(RestoreError, match="applying the ufw rules failed"):
        host.restore_firewall(ctx_of(FakeCtx(bad)), Step("fw", "t", FW, "host"),
                              lambda: transport(FakeTarget([])))  # fmt: skip
    assert bad.ran("ufw --force disable")


def test_firewall_nftables_input_and_nothing_to_do() -> None:
    assert host.apply_argv("nftables") == ["nft", "-f", "/dev/stdin"]
    assert host.apply_input("nftables", "table inet f {\n}").startswith(b"flush ruleset\n")
    assert host.UNDO["iptables"].startswith("iptables-restore <")
    t = FakeTarget([])
    none = HostFirewallParams()
    assert "nothing applied" in host.restore_firewall(
        ctx_of(FakeCtx(t)), Step("fw", "t", none, "host"), lambda: transport(t)
    )
    off = HostFirewallParams(firewall="ufw", active=False, status="Status: inactive")
    host.restore_firewall(ctx_of(FakeCtx(t)), Step("fw", "t", off, "host"), lambda: transport(t))
    assert t.ran("ufw --force disable") and not t.ran("systemd-run")


def test_an_unreadable_ufw_fails_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = (
        f"{host.SECTION} arch\namd64\n{host.SECTION} firewall\nufw\n"
        "ERROR: problem running iptables: modprobe failed\n"
    )
    t = FakeTarget([("sec arch", (0, inventory, ""))])
    cfg = SourceConfig(type="host", name="host", where="hosts.t.sources[0]")
    with pytest.raises(SnapshotError, match="cannot read `ufw status verbose`: ERROR: problem"):
        host.HostSource(cfg).plan(transport(t), PlanContext(snapshot_id="S1"))
    assert "id -u" in host.INVENTORY
