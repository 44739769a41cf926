"""`docker-image` source: one `docker save` of all the source's images, so a fresh
host needs no registry and no build.

All images go into ONE archive: `docker save a b c` stores each layer once, and
locally built images usually share their base layers (in the lab, seven images
share one base: one archive is ~7x smaller than seven). Fingerprint: the sorted
image IDs with their tags; if none changed since an earlier complete snapshot,
the archive is referenced, not uploaded again. Split images into several
`docker-image` sources to make them reusable independently.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, SnapshotError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.steps import ImageParams, Step, StepContext
from vkbackup.sources.base import (
    DECOMPRESSORS,
    SUFFIX,
    PlanContext,
    SourcePlan,
    StreamPlan,
    compress_stage,
)
from vkbackup.transport.base import Transport, pipeline_argv


def save_script(refs: tuple[str, ...], compressor: str) -> str:
    return "docker save " + " ".join(shlex.quote(r) for r in refs) + compress_stage(compressor)


class DockerImageSource:
    type = "docker-image"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        images: list[dict[str, object]] = []
        for ref in self.cfg.images:
            res = t.run(["docker", "image", "inspect", "-f", "{{.Id}} {{.Size}}", ref], check=False)
            if res.status != 0:
                raise SnapshotError(
                    f"{t.name}: docker-image source {self.cfg.name!r} ({self.cfg.where}.images): "
                    f"image {ref!r} not found on the host"
                )
            image_id, size = res.stdout.decode().split()
            images.append({"ref": ref, "id": image_id, "size": int(size)})
        fp = "images:" + ",".join(sorted(f"{i['id']}={i['ref']}" for i in images))
        stream = StreamPlan(
            name="images.tar" + SUFFIX[ctx.compressor],
            role="image",
            argv=pipeline_argv(save_script(self.cfg.images, ctx.compressor)),
            compression=ctx.compressor,
            fingerprint=fp,
            size_hint=sum(int(str(i["size"])) for i in images),
            meta={"refs": list(self.cfg.images)},
        )
        return SourcePlan(streams=[stream], meta={"images": images})

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        return None


# -- restore --------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    """What a snapshot recorded of a docker-image source (private part)."""

    images: tuple[str, ...]  # the references saved

    @classmethod
    def decode(cls, doc: dict[str, Any], where: str) -> Meta:
        images = doc.get("images") or []
        if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
            raise IntegrityError(f"{where}.images: expected a list of records")
        return cls(images=tuple(str(i.get("ref", "")) for i in images))


def restore_steps(
    name: str, meta: Meta, objects: list[ObjectRecord], refs: Callable[[ObjectRecord], list[str]]
) -> list[Step]:
    """The restore steps of a docker-image source: one `docker load` per archive.
    *refs* gives the references an archive holds (recorded per object)."""
    steps = []
    for o in objects:
        held = refs(o)
        steps.append(
            Step(
                f"image:{name}",
                f"load images {', '.join(held)}",
                ImageParams(tuple(held)),
                name,
                [o],
            )
        )
    return steps


def restore_argv(compression: str) -> list[str]:
    """argv that loads the `docker save` stream on stdin."""
    dec = DECOMPRESSORS[compression]
    head = (" ".join(dec) + " | ") if dec else ""
    return pipeline_argv(f"{head}docker load")


def load_images(ctx: StepContext, step: Step) -> str:
    """The image step: stream each archive into `docker load`."""
    for obj in step.objects:
        ctx.feed(obj, restore_argv)
    return "loaded"
