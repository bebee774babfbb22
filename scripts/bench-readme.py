#!/usr/bin/env python3
"""Rewrites the README's benchmark table from bench/results/latest.json.

The table sits between the <!-- bench:start --> and <!-- bench:end --> markers, and the cost
model's summary between <!-- cost:start --> and <!-- cost:end -->, so the figures in the README
are always the ones the last `make bench` measured.
"""
import json
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
figures = json.loads((root / "bench/results/latest.json").read_text())
rows = ["| figure | value | unit |", "| --- | ---: | --- |"]
for name, figure in figures.items():
    value = figure["value"]
    shown = f"{value:.0f}" if value == int(value) else f"{value:.3f}".rstrip("0").rstrip(".")
    rows.append(f"| `{name}` | {shown} | {figure['unit']} |")
table = "\n".join(rows)

# The cost model's summary, between its own markers.
def usd(name):
    return f"{figures[name]['value']:.3f}" if name in figures else "not measured"


def pct(name):
    return f"{figures[name]['value']:.1f}%" if name in figures else "not measured"


cost_rows = ["| 1 million product reads (Zipf workload) | USD |", "| --- | ---: |"]
for label, name in [
    ("no cache", "nocache"),
    ("plain cache-aside, Redis as deployed (serverless, no eviction)", "plain"),
    ("ours, Redis as deployed", "ours"),
    ("plain cache-aside, Redis holding 10% of the keys", "plain_redis_10pct"),
    ("ours, Redis holding 10% of the keys", "ours_redis_10pct"),
    ("DAX, 3 × dax.t3.small (modelled)", "dax"),
]:
    cost_rows.append(f"| {label} (`cost_per_million_reads_usd_{name}`) | {usd('cost_per_million_reads_usd_' + name)} |")
cost_rows += [
    "",
    "| figure | value |",
    "| --- | ---: |",
    f"| `dynamodb_read_units_saved_pct` (target 90%) | {pct('dynamodb_read_units_saved_pct')} |",
    f"| `dynamodb_read_units_saved_pct_redis_10pct` | {pct('dynamodb_read_units_saved_pct_redis_10pct')} |",
    f"| `zipf_first_read_pct` (reads no cache serves without warming) | {pct('zipf_first_read_pct')} |",
    f"| `cost_per_million_views_usd_before` (a counter update per view) | {usd('cost_per_million_views_usd_before')} |",
    f"| `cost_per_million_views_usd_after` (view-aggregator windows) | {usd('cost_per_million_views_usd_after')} |",
]
cost_table = "\n".join(cost_rows)

readme = root / "README.md"
text = readme.read_text()
for marker, content in [("bench", table), ("cost", cost_table)]:
    if f"<!-- {marker}:start -->" not in text:
        raise SystemExit(f"README.md has no <!-- {marker}:start --> marker")
    text = re.sub(
        rf"<!-- {marker}:start -->\n.*?<!-- {marker}:end -->",
        lambda m: f"<!-- {marker}:start -->\n" + content + f"\n<!-- {marker}:end -->",
        text,
        flags=re.S,
    )
readme.write_text(text)
print(f"bench-readme: {len(figures)} figures written to README.md")
