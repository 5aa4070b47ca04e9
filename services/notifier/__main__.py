"""Run the notifier service: `python -m services.notifier` (or `stamen service notifier`)."""

from stamen.service.runner import run

from services.notifier.app import init_app

if __name__ == "__main__":
    run("notifier", init_app)
