"""Callbacks to customers: their signature, the guard on where they may go, and their wire format."""
