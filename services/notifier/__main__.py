"""Run the notifier service: `python -m services.notifier` (or `stamen service notifier`)."""

from services.notifier.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("notifier", init_app)
