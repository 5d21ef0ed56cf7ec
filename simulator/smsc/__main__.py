"""`python -m simulator.smsc`: the simulated SMSC without the rest of the `relay` command."""

from __future__ import annotations

import typer

from simulator.smsc.cli import smsc_sim

if __name__ == "__main__":
    typer.run(smsc_sim)
