"""The benchmark is not a test suite: run it with `make bench` (tests/bench/bench_run.py)."""

collect_ignore_glob = ["*.py"]
