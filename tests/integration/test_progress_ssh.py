"""Upload progress over real SFTP (SSHTransport): the installed reporter sees every chunk."""

import os
import uuid

import pytest

from dagster_hpc import progress
from tests.integration.slurm_support import remote, ssh_resource


@pytest.mark.parametrize("holder", [False, True], ids=["sftp-in-process", "connection-holder"])
def test_upload_reports_progress(cluster, tmp_path, holder):
    src = tmp_path / "bundle.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    seen: list[tuple[int, int]] = []
    target = f"/tmp/dhpc-progress-{uuid.uuid4().hex[:8]}"
    resource = ssh_resource(cluster).model_copy(update={"connection_holder": holder})
    transport = resource.get_transport()
    try:
        with progress.reporting(lambda what, done, total, unit="bytes": seen.append((done, total))):
            transport.put_file(src, target)
    finally:
        remote(cluster, f"rm -f {target}")
    sizes = [d for d, _ in seen]
    assert sizes[0] == 0 and sizes[-1] == src.stat().st_size
    assert len(sizes) > 2 or holder  # SFTP in process: every chunk; the holder: start and end
    assert sizes == sorted(sizes) and {t for _, t in seen} == {src.stat().st_size}
