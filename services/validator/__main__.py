"""Run the validator service: `python -m services.validator` (or `stamen service validator`)."""

from services.validator.app import init_app
from stamen.service.runner import run

if __name__ == "__main__":
    run("validator", init_app)
