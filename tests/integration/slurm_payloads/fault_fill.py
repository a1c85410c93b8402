"""Fault tests: reports a message, then fills its run directory's filesystem (a careless payload
that swallows every error), tries to report the rest and exits 0 as if all was well."""

import contextlib
import os
from pathlib import Path

from dagster_pipes import open_dagster_pipes

JUNK = Path(os.environ["DAGSTER_HPC_RUN_DIR"]) / "junk.bin"
BLOCK = b"x" * (64 << 10)

with contextlib.suppress(Exception), open_dagster_pipes() as pipes:
    pipes.log.info("before the disk filled")
    with contextlib.suppress(OSError), JUNK.open("wb") as fh:
        while True:
            fh.write(BLOCK)
            fh.flush()
    pipes.log.info("after the disk filled")
    pipes.report_asset_materialization(metadata={"complete": True})
os._exit(0)
