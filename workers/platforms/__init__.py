"""Platform adapters: one small interface, one module per platform kind."""
