"""Operator tooling: dead letters, live status, the local launcher and the failover drill.

It talks to the relay only through the store, the broker and HTTP, so it depends on `shared` alone.
"""
