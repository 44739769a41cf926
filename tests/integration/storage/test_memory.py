"""Peak memory of a streaming put: about two parts, whatever the object size."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.lab.s3 import S3Server


def test_put_peak_memory_is_two_parts(s3_server: S3Server) -> None:
    part_mib = 8
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.storage.measure_put_memory",
            "--size-mib=256",
            f"--part-mib={part_mib}",
            f"--endpoint={s3_server.endpoint}",
            f"--access-key={s3_server.access_key}",
            f"--secret-key={s3_server.secret_key}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    print(doc)
    assert doc["size_mib"] == 256
    # two part buffers, plus a few MiB of HTTP/SSL/allocator slack
    assert doc["peak_growth_mib"] <= 2 * part_mib + 6, (doc, r.stderr[-3000:])
