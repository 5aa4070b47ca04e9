"""Run the scheduler service: `python -m services.scheduler` (or `stamen service scheduler`)."""

from stamen.service.runner import run

from services.scheduler.app import init_app

if __name__ == "__main__":
    run("scheduler", init_app)
