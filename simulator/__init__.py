"""The simulated SMS platform: speaks the http-json contract, counts what it gets, fails on demand."""
