"""Pieces of `bench/stress.py`: a raw WebSocket client, the scripted hostile upstream, the gateway
and bystander child processes, and the line protocol the orchestrator drives them with.

Benchmark code only: nothing here is imported by the gateway, and every loop is bounded.
"""
