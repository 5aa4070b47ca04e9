"""Run the portal service: `python -m services.portal` (or `stamen service portal`)."""

from services.portal.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("portal", init_app)
