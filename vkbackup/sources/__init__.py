"""Sources: one module per kind of thing backed up (see `base` for the interface)."""

from __future__ import annotations

from vkbackup.config.model import SourceConfig
from vkbackup.sources.base import PlanContext, Source, SourcePlan, StreamPlan


def make_source(cfg: SourceConfig) -> Source:
    """Given a source config, return the Source that handles its type."""
    from vkbackup.sources import docker_image, docker_volume, files, host, postgres

    kinds: dict[str, type] = {
        "postgres": postgres.PostgresSource,
        "files": files.FilesSource,
        "docker-volume": docker_volume.DockerVolumeSource,
        "docker-image": docker_image.DockerImageSource,
        "host": host.HostSource,
    }
    src: Source = kinds[cfg.type](cfg)
    return src


__all__ = ["PlanContext", "Source", "SourcePlan", "StreamPlan", "make_source"]
