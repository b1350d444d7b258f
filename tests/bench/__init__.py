"""Benchmarks (tests/bench/README.md): ``python -m tests.bench [--smoke] [--json FILE]``.

Every scenario runs the BlueZ simulator, the service (or its baseline) and the
clients as separate processes on a private system-like bus, and compares the
service with its baseline in the same run. Not part of the test suite, except
``test_smoke.py``, which runs the smoke mode so that the benchmark cannot rot.
"""
