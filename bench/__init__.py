"""Benchmarks of the mirror. `bench/run.py` compares it with the reference registry's
proxy mode and nginx (issue 6); the other scripts measure one mechanism each."""
