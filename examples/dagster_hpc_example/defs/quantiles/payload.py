"""The component's payload: quantiles of a seeded synthetic sample (stdlib + dagster-pipes only)."""

import argparse
import random
import statistics

from dagster_pipes import open_dagster_pipes

parser = argparse.ArgumentParser()
parser.add_argument("--samples", type=int, default=1000)
args = parser.parse_args()

with open_dagster_pipes() as pipes:
    rng = random.Random(42)
    values = sorted(rng.gauss(100.0, 15.0) for _ in range(args.samples))
    cuts = statistics.quantiles(values, n=100)
    result = {
        f"q{int(q * 100)}": round(cuts[int(q * 100) - 1], 3) for q in pipes.extras["quantiles"]
    }
    pipes.log.info(f"{args.samples} samples: {result}")
    pipes.report_asset_materialization(metadata={"samples": args.samples, **result})
