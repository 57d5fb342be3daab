"""Data contracts as Great Expectations suites (JSON), read by ``tasks/common/contracts.py``."""
