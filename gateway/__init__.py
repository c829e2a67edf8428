"""The local gateway: one port serving WebSocket dialects (native, and later provider stand-ins) and
plain HTTP; the hub that turns local demand into upstream subscriptions and fans events out; typed
config; the CLI. Depends on `providers` and `schemas`, never the reverse.
"""
