"""Run the scheduler service: `python -m services.scheduler` (or `stamen service scheduler`)."""

from services.scheduler.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("scheduler", init_app)
