"""Run the portal service: `python -m services.portal` (or `stamen service portal`)."""

from stamen.service.runner import run

from services.portal.app import init_app

if __name__ == "__main__":
    run("portal", init_app)
