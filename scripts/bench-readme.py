#!/usr/bin/env python3
"""Rewrites the README's benchmark table from bench/results/latest.json.

The table sits between the <!-- bench:start --> and <!-- bench:end --> markers, so the
figures in the README are always the ones the last `make bench` measured.
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
readme = root / "README.md"
text = readme.read_text()
new = re.sub(r"<!-- bench:start -->\n.*?<!-- bench:end -->", lambda m: "<!-- bench:start -->\n" + table + "\n<!-- bench:end -->", text, flags=re.S)
if new == text and "<!-- bench:start -->" not in text:
    raise SystemExit("README.md has no <!-- bench:start --> marker")
readme.write_text(new)
print(f"bench-readme: {len(figures)} figures written to README.md")
