"""Helpers shared by the tests, the benches and the demo (no product code depends on them)."""
