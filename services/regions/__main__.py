"""Run the regions service: `python -m services.regions` (or `stamen service regions`)."""

from stamen.service.runner import run

from services.regions.app import init_app

if __name__ == "__main__":
    run("regions", init_app)
