"""NanoPhi's benchmarks: `python -m bench --mode=train|sample|data` (see bench/__main__.py)."""
