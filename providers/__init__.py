"""Upstream providers: one package per provider, every package the same shape (README.md here):
the provider's protocol as pure modules, and three Trio shells over it (connection, adapter,
emulator); `common` holds what they share.

`providers.base` is the contract with the gateway: a source is told what changed in what is
wanted (`update_wanted(added, removed)`) and pushes normalized events into a sink that never blocks.
"""
