"""`python -m simulator`: the simulated platform without the rest of the `relay` command."""

from __future__ import annotations

import typer

from simulator.cli import platform_sim

if __name__ == "__main__":
    typer.run(platform_sim)
