"""Run the validator service: `python -m services.validator` (or `stamen service validator`)."""

from stamen.service.runner import run

from services.validator.app import init_app

if __name__ == "__main__":
    run("validator", init_app)
