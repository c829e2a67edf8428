"""Luzia (api.luzia.dev): real-time tickers over WebSocket, and a quote derived from each ticker.

The package has the shape every provider package has. Pure (no Trio): `wire` (Luzia's messages),
`grammar` (channels and tiers), `client` (which channels on which connection, kept incrementally),
`server` (Luzia's server side as a state machine, shared by the emulator and the gateway's
Luzia-compatible endpoint), `normalize` / `denormalize` (wire <-> schemas), `feed` (the emulated
market as ticker frames), `streams` (tickers -> the wanted streams, staleness, gaps), `policy`
(the adapter's knobs). Trio shells: `connection`, `adapter` (`LuziaAdapter`), `emulator`.

Nothing is imported here, so importing any pure module loads no Trio.
"""
