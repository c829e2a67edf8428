"""Helpers every test package shares (memory-stream connectors, ...)."""
