"""Read many growing files in ONE round trip that costs two processes when nothing changed.

``Transport.read_many_from`` runs ``tail | head | base64`` for every file on every tick: fine for
the four files of one job, but an array of 100 tasks has 400 files, i.e. 1200 processes per
tick on the login node. Here one ``find -printf`` reports every size, and only files that grew
past their offset are read (in the same bash script).
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Sequence

from dagster_hpc.errors import TransportError
from dagster_hpc.transport.base import Transport

READ_TIMEOUT_S = 60.0  # one batched read on a loaded login node


def changed_files_script(requests: Sequence[tuple[str, int]], max_bytes: int) -> str:
    """bash script: for each file that is longer than its offset, print its path on one line and
    the bytes from the offset (at most ``max_bytes``) base64-encoded on the next."""
    offsets = " ".join(f"[{shlex.quote(p)}]={int(o)}" for p, o in requests)
    return (
        f"declare -A OFF=({offsets}); "
        "find \"${!OFF[@]}\" -maxdepth 0 -printf '%s %p\\n' 2>/dev/null | "
        "while read -r size path; do off=${OFF[$path]}; "
        'if [ -n "$off" ] && [ "$size" -gt "$off" ]; then printf \'%s\\n\' "$path"; '
        f'tail -c +$((off + 1)) -- "$path" | head -c {int(max_bytes)} | base64 -w0; echo; fi; done; true'
    )


def read_changed(
    transport: Transport, requests: Sequence[tuple[str, int]], *, max_bytes: int
) -> list[bytes]:
    """New bytes of each ``(path, offset)``, in order (b"" when unchanged or missing)."""
    if not requests:
        return []
    script = changed_files_script(requests, max_bytes)
    res = transport.run(f"bash -c {shlex.quote(script)}", timeout=READ_TIMEOUT_S)
    if not res.ok:
        raise TransportError(
            f"batched read of {len(requests)} files failed (exit {res.exit_code}): {res.stderr[-300:]}"
        )
    return parse_changed(res.stdout, [p for p, _ in requests])


def parse_changed(stdout: str, paths: Sequence[str]) -> list[bytes]:
    found: dict[str, bytes] = {}
    lines = stdout.split("\n")
    for n in range(0, len(lines) - 1, 2):
        path, data = lines[n], lines[n + 1]
        try:
            found[path] = base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise TransportError(f"batched read returned data that is not base64: {exc}") from exc
    return [found.get(p, b"") for p in paths]
