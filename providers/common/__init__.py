"""What every provider adapter and emulator share: backoff, liveness timers, the reconnect loop,
the transport connector and the emulated market."""
