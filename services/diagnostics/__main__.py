"""Run the diagnostics service: `python -m services.diagnostics` (or `stamen service diagnostics`)."""

from stamen.service.runner import run

from services.diagnostics.app import init_app

if __name__ == "__main__":
    run("diagnostics", init_app)
