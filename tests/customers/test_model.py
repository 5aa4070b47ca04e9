"""Pure customer rules: ids from names, resource names, request checks, lifecycle rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stamen.customers.model import (
    InvalidCustomer,
    NewCustomer,
    bucket_name,
    cost_allocation_tags,
    customer_id_from_name,
    lifecycle_rules,
)
from stamen.customers.settings import CustomerSettings
from stamen.domain.workset import TENANT_ID_PATTERN

# S3 rules for new buckets: 3-63 chars, lowercase letters, digits, '-' (we never use '.'),
# start and end with a letter or digit.
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
tenant_ids = st.from_regex(TENANT_ID_PATTERN, fullmatch=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Acme Genomics, Inc.", "acme-genomics-inc"), ("  Zürich Lab ", "zurich-lab"), ("A" * 80, "a" * 63)],
)
def test_customer_id_from_name(name: str, expected: str) -> None:
    assert customer_id_from_name(name) == expected


def test_customer_id_from_a_name_without_letters_is_refused() -> None:
    with pytest.raises(InvalidCustomer):
        customer_id_from_name("!!! ???")


@given(st.text(min_size=1, max_size=120))
def test_derived_ids_are_tenant_ids(name: str) -> None:
    try:
        cid = customer_id_from_name(name)
    except InvalidCustomer:
        return
    assert TENANT_ID_PATTERN.fullmatch(cid)


@given(tenant_ids, st.sampled_from(["us-west-2", "eu-central-1", "ap-southeast-2"]))
def test_bucket_names_are_valid_and_distinct_per_tenant(cid: str, region: str) -> None:
    name = bucket_name(cid, region)
    assert S3_BUCKET.fullmatch(name), name
    assert "--" not in name


def test_long_ids_keep_distinct_bucket_names() -> None:
    a, b = "x" * 60 + "-a", "x" * 60 + "-b"
    assert bucket_name(a, "us-west-2") != bucket_name(b, "us-west-2")
    assert len(bucket_name(a, "us-west-2")) <= 63


def test_underscores_become_hyphens_in_bucket_names() -> None:
    assert bucket_name("lab_one", "us-west-2") == "stamen-lab-one-us-west-2"


def test_new_customer_normalises_and_compares() -> None:
    new = NewCustomer.create(
        customer_name=" Acme ", email="A@Acme.Example", max_concurrent_worksets=2, max_storage_gb=10
    )
    assert (new.customer_id, new.customer_name, new.email) == ("acme", "Acme", "a@acme.example")
    assert cost_allocation_tags(new) == {"stamen:customer-id": "acme", "stamen:managed-by": "stamen"}


def test_lifecycle_rules_follow_settings() -> None:
    s = CustomerSettings(
        intermediate_expire_days=3, results_transition_days=45, results_storage_class="GLACIER_IR"
    )
    rules = {r["ID"]: r for r in lifecycle_rules(s)}
    assert rules["stamen-expire-intermediates"]["Expiration"] == {"Days": 3}
    assert rules["stamen-results-infrequent-access"]["Transitions"] == [
        {"Days": 45, "StorageClass": "GLACIER_IR"}
    ]


def test_results_transition_below_s3_minimum_is_a_settings_error() -> None:
    with pytest.raises(ValueError):
        CustomerSettings(results_transition_days=7)
