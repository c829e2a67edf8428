"""CoinAPI Market Data WebSocket V1, in the shape every provider package shares.

Pure (no Trio): `wire` (messages both ways), `grammar` (symbol ids, filters), `client` (what to send
for a wanted set), `server` (one client connection's state machine), `normalize` / `denormalize`
(wire <-> schemas), `feed` (the emulated market as CoinAPI messages), `streams` (decoded messages ->
events of the wanted streams), `policy` (the adapter's knobs). Trio shells: `connection` (one
upstream link), `adapter` (the `providers.base.Source`), `emulator` (the stand-in server).

Nothing is imported here, so importing a pure module loads no Trio.
"""
