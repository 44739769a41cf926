"""`docker-image` source: `docker save` of images built on the host, one object
per image, so a fresh host needs no registry and no build.

Fingerprint: the image ID. An image whose ID is unchanged since an earlier
complete snapshot is referenced, not uploaded again.
"""

from __future__ import annotations

import re

from vkbackup.config.model import SourceConfig
from vkbackup.errors import SnapshotError
from vkbackup.sources.base import SUFFIX, PlanContext, SourcePlan, StreamPlan, compress_stage
from vkbackup.transport.base import Transport, pipeline_argv


def object_name(ref: str, compressor: str) -> str:
    """A storage-safe object name for an image reference."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref).strip("._-") or "image"
    return f"image-{safe[:80]}.tar{SUFFIX[compressor]}"


class DockerImageSource:
    type = "docker-image"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        streams: list[StreamPlan] = []
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
            streams.append(
                StreamPlan(
                    name=object_name(ref, ctx.compressor),
                    role="image",
                    argv=pipeline_argv("docker save " + _q(ref) + compress_stage(ctx.compressor)),
                    compression=ctx.compressor,
                    fingerprint=f"image:{image_id}:{ref}",
                    size_hint=int(size),
                    meta={"ref": ref, "id": image_id},
                )
            )
        return SourcePlan(streams=streams, meta={"images": images})

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        return None


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def restore_argv(compression: str) -> list[str]:
    """argv that loads the `docker save` stream on stdin."""
    from vkbackup.sources.base import DECOMPRESSORS

    dec = DECOMPRESSORS[compression]
    head = (" ".join(dec) + " | ") if dec else ""
    return pipeline_argv(f"{head}docker load")
