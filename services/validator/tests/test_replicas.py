"""How much validation runs at once: `STAMEN_VALIDATION_CONCURRENCY` per validator (the burst that arrives
after a PostgreSQL outage is worked off that many at a time), and two validators under `stamen up`
(`STAMEN_VALIDATOR_REPLICAS`), so a killed one leaves the other validating."""

from __future__ import annotations

from pathlib import Path

from services.validator.app import init_app
from services.validator.submission import CONSUMER
from stamen.bus.consumer import ConsumerSpec
from stamen.service.keys import CONSUMER_SPECS
from stamen.settings import Settings
from stamen.stack.launcher import EmbeddedStack


def submitted_consumer(settings: Settings) -> ConsumerSpec:
    specs: list[ConsumerSpec] = init_app(settings)[CONSUMER_SPECS]
    return next(s for s in specs if s.durable == CONSUMER)


def test_validation_concurrency_is_its_own_setting() -> None:
    spec = submitted_consumer(Settings(validation_concurrency=24, consumer_concurrency=3))
    assert spec.concurrency == 24
    # The other consumers keep the general setting; the default validates more at once than they handle.
    assert submitted_consumer(Settings()).concurrency == 16 > Settings().consumer_concurrency


def test_stamen_up_runs_two_validators_by_default(tmp_path: Path) -> None:
    assert [i for i, s in EmbeddedStack(Settings(), tmp_path).instances() if s == "validator"] == [
        "validator",
        "validator-2",
    ]
    one = EmbeddedStack(Settings(validator_replicas=1, scheduler_replicas=3), tmp_path).instances()
    assert [i for i, _ in one] == [
        "validator", "scheduler", "scheduler-2", "scheduler-3", "diagnostics", "notifier", "regions", "portal",
    ]  # fmt: skip
