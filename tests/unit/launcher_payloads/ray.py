"""A stand-in for the `ray` package in launcher tests: the nodes are the `fake-ray start`
processes recorded in FAKE_RAY_LOG (FAKE_RAY_HIDE_NODES=1: none; fake-ray then never says it
started either, so the launcher's join wait times out)."""

import json
import os
from pathlib import Path

_LOG = Path(os.environ.get("FAKE_RAY_LOG") or "fake-ray-log").absolute()


def init(address: str | None = None, **kwargs) -> None:
    if address != os.environ.get("RAY_ADDRESS"):
        raise ConnectionError(
            f"fake ray: asked for {address}, RAY_ADDRESS is {os.environ.get('RAY_ADDRESS')}"
        )


def nodes() -> list[dict]:
    if os.environ.get("FAKE_RAY_HIDE_NODES"):
        return []
    return [{"Alive": True, **json.loads(p.read_text())} for p in sorted(_LOG.glob("start-*.json"))]


def shutdown() -> None:
    pass
