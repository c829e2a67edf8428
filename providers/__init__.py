"""Upstream providers: one package per provider, each with its wire format, pure normalizing,
session (Trio I/O) and a protocol-faithful emulator; `common` holds what they share.

`providers.base` is the contract with the gateway: a source is told what changed in what is
wanted (`update_wanted(added, removed)`) and pushes normalized events into a sink that never blocks.
"""
