"""Run the diagnostics service: `python -m services.diagnostics` (or `stamen service diagnostics`)."""

from services.diagnostics.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("diagnostics", init_app)
