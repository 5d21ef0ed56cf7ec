"""A simulated SMPP 3.4 SMSC with switchable faults: the peer of the relay's `smpp` sites in tests,
drills and benchmarks."""
