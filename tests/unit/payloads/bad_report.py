"""Writes a Pipes message Dagster must reject (an unknown method), bypassing dagster_pipes, then
keeps running: the step must fail and the job be cancelled instead of waited for."""

import json
import time

from dagster_pipes import (
    PIPES_PROTOCOL_VERSION,
    PIPES_PROTOCOL_VERSION_FIELD,
    PipesEnvVarParamsLoader,
)

path = PipesEnvVarParamsLoader().load_messages_params()["path"]
message = {
    PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION,
    "method": "no_such_method",
    "params": {},
}
with open(path, "a") as fh:
    fh.write(json.dumps(message) + "\n")
print("still running", flush=True)
time.sleep(120)
