"""Host facts: a container whose name, image or compose labels break Docker's or
compose's rules is left out at snapshot time, with the reason, so a hostile label
on prod can neither reach a restore script nor make every restore of the host
refuse the manifest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vkbackup.errors import IntegrityError
from vkbackup.facts import parse_facts
from vkbackup.restore.records import HostFacts


def inspect(name: str, image: str, project: str, service: str) -> dict[str, Any]:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service}
    labels["com.docker.compose.project.working_dir"] = f"/opt/{project}"
    return {
        "Name": "/" + name,
        "Image": "sha256:" + "ab" * 32,
        "Config": {"Image": image, "Labels": labels},
        "State": {"Running": True},
    }


def facts_text(*containers: dict[str, Any]) -> str:
    return "\n".join(
        [
            "== os",
            'ID="debian"',
            "== compose",
            "v2 2.24.0",
            "== containers",
            json.dumps(list(containers)),
        ]
    )


GOOD = inspect("chatwoot-chatwoot-1", "chatwoot:lab", "chatwoot", "chatwoot")


@pytest.mark.parametrize(
    ("hostile", "why"),
    [
        (inspect("vk-x", "redis:lab", "vk$(touch /tmp/p)", "redis"), "compose project label"),
        (inspect("vk-x", "redis:lab", "vk", "svc`id`"), "compose service label"),
        (inspect("vk-x", "redis:lab", "vk", "-rf"), "compose service label"),
        (inspect("vk-x", "Redis;id", "vk", "redis"), "container image"),
        (inspect("vk x", "redis:lab", "vk", "redis"), "container"),
    ],
)
def test_a_container_with_a_hostile_name_or_label_is_left_out(
    hostile: dict[str, Any], why: str
) -> None:
    facts = parse_facts(facts_text(GOOD, hostile))
    assert [c["name"] for c in facts["containers"]] == ["chatwoot-chatwoot-1"]
    assert list(facts["compose_projects"]) == ["chatwoot"]
    (ignored,) = facts["ignored_containers"]
    assert ignored["why"].startswith(f"{why}: not a valid")
    # what is recorded decodes at restore time: the manifest stays restorable
    decoded = HostFacts.decode(facts, "snapshots/prod/X.json: facts")
    assert [c.name for c in decoded.containers] == ["chatwoot-chatwoot-1"]
    assert list(decoded.projects) == ["chatwoot"]


def test_the_same_name_recorded_anyway_is_refused_at_restore() -> None:
    hostile = inspect("vk-x", "redis:lab", "vk$(touch /tmp/p)", "redis")
    facts = parse_facts(facts_text(GOOD))
    from vkbackup.facts import compose_projects, sanitize_container

    forged = [*facts["containers"], sanitize_container(hostile)]
    doc = {**facts, "containers": forged, "compose_projects": compose_projects(forged)}
    with pytest.raises(IntegrityError, match=r"facts\.containers\[1\]\.labels\.com\.docker"):
        HostFacts.decode(doc, "snapshots/prod/X.json: facts")
