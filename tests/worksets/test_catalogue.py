from __future__ import annotations

import json
import re

from stamen.worksets import WorksetSpec
from stamen.worksets.findings import CODES
from stamen.worksets.registry import daylily_format, prices, references, resource_profiles
from stamen.worksets.spec import Pipeline

from .conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "libs" / "stamen" / "worksets"
CODE_PATTERN = re.compile(r"\b(?:VAL|SNF)-[A-Z]+-\d{3}\b")


def test_every_catalogued_code_is_documented() -> None:
    doc = (REPO_ROOT / "docs" / "validation.md").read_text()
    missing = [code for code in CODES if code not in doc]
    assert missing == []


def test_every_code_used_in_the_package_is_catalogued() -> None:
    used = {code for path in PACKAGE.glob("*.py") for code in CODE_PATTERN.findall(path.read_text())}
    assert used - set(CODES) == set()
    assert len(used) > 40


def test_schema_generates() -> None:
    schema = WorksetSpec.model_json_schema()
    json.dumps(schema)
    assert {"name", "tenant", "samples"} <= set(schema["required"])


def test_data_files_load_and_cover_every_pipeline() -> None:
    assert set(resource_profiles().pipelines) == set(Pipeline.__args__)
    assert {"us-west-2", "us-east-1", "eu-west-1"} <= set(prices().regions)
    assert references().canonical("grch38") == "hg38" and references().canonical("GRCh37") == "hg19"
    assert (
        references().expected_objects("b37", "s3://refs/b37")[0] == "s3://refs/b37/human_g1k_v37_decoy.fasta"
    )
    assert daylily_format().platform_for_instrument("PromethION") == "ONT"


def test_documented_codes_exist() -> None:
    doc = (REPO_ROOT / "docs" / "validation.md").read_text()
    assert set(CODE_PATTERN.findall(doc)) - set(CODES) == set()
