"""Records its pid in $PIDS_FILE, then sleeps (the parent-death test SIGKILLs Dagster meanwhile)."""

import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes():
    target = Path(os.environ["PIDS_FILE"])
    Path(f"{target}.tmp").write_text(str(os.getpid()))
    os.replace(f"{target}.tmp", target)
    time.sleep(300)
