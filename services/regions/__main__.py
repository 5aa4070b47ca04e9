"""Run the regions service: `python -m services.regions` (or `stamen service regions`)."""

from services.regions.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("regions", init_app)
