"""Ranking rules of classify_error, independent of the corpus."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stamen.diagnostics import (
    UNKNOWN_CODE,
    CatalogEntry,
    Diagnosis,
    ErrorCategory,
    RetryClass,
    catalog,
    classify_error,
    is_retryable,
)
from stamen.diagnostics.classifier import (
    LOG_TAIL_LINES,
    MAX_SCANNED_LINES,
    normalise_slurm_state,
    reported_exit_status,
)

OOM_LOG = """\
[M::process] read 662252 sequences (80000167 bp)...
slurmstepd: error: Detected 1 oom-kill event(s) in StepId=4412331.batch. Some of your processes may have \
been killed by the cgroup out-of-memory handler.
"""


def _entry(code: str, tier: str = "cause", **match: Any) -> CatalogEntry:
    return CatalogEntry.model_validate(
        {
            "code": code,
            "name": f"entry {code}",
            "summary": "Synthetic entry for ranking tests.",
            "category": "pipeline",
            "severity": "error",
            "retry_class": "permanent",
            "tier": tier,
            "match": match,
            "remediation": ["n/a"],
            "docs_anchor": code.lower(),
        }
    )


def _ranking(diagnosis: Diagnosis) -> list[tuple[str, float]]:
    return [(candidate.code, candidate.score) for candidate in diagnosis.candidates]


def test_oom_log_ranks_oom_first_with_evidence() -> None:
    diagnosis = classify_error(OOM_LOG, exit_code=137, slurm_state="OUT_OF_MEMORY")
    top = diagnosis.top
    assert top.code == "WS-RES-001"
    assert top.retry_class is RetryClass.RESOURCE
    assert [line.line_number for line in top.evidence_lines] == [2]
    assert "oom-kill" in top.evidence_lines[0].text
    assert set(top.matched_facts) == {"exit code 137", "job state OUT_OF_MEMORY"}


def test_candidates_are_sorted_by_descending_score() -> None:
    text = OOM_LOG + "Error in rule sort_bam:\n    jobid: 3\n"
    scores = [candidate.score for candidate in classify_error(text, exit_code=1).candidates]
    assert len(scores) >= 2
    assert scores == sorted(scores, reverse=True)


def test_unknown_input_gives_single_unknown_candidate_with_log_tail() -> None:
    lines = [f"step {number} finished" for number in range(1, 41)]
    diagnosis = classify_error("\n".join(lines) + "\n\n", exit_code=3)
    assert [candidate.code for candidate in diagnosis.candidates] == [UNKNOWN_CODE]
    assert diagnosis.is_unknown
    tail = diagnosis.top.evidence_lines
    assert len(tail) == LOG_TAIL_LINES
    assert tail[-1].text == "step 40 finished"
    assert tail[-1].line_number == 40
    assert diagnosis.log_tail[0] == f"step {40 - LOG_TAIL_LINES + 1} finished"


def test_empty_input_is_still_a_diagnosis() -> None:
    diagnosis = classify_error("")
    assert diagnosis.top.code == UNKNOWN_CODE
    assert diagnosis.top.evidence_lines == ()


def test_diagnosis_refuses_to_be_empty() -> None:
    with pytest.raises(ValueError, match="at least one candidate"):
        Diagnosis(candidates=())


def test_generic_exit_code_alone_identifies_nothing() -> None:
    assert classify_error("all good so far", exit_code=1).top.code == UNKNOWN_CODE


def test_specific_evidence_alone_is_enough() -> None:
    assert classify_error("", exit_code=137).top.code == "WS-RES-001"
    assert classify_error("", slurm_state="TIMEOUT").top.code == "WS-CLU-001"
    assert classify_error("", signal=11).top.code == "WS-PIP-013"


def test_negative_exit_code_is_read_as_signal() -> None:
    top = classify_error("", exit_code=-9).top
    assert top.code == "WS-RES-001"
    assert top.matched_facts == ("signal 9",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CANCELLED by 50211", "CANCELLED"),
        (" timeout ", "TIMEOUT"),
        ("RUNNING+", "RUNNING"),
        ("", None),
        (None, None),
    ],
)
def test_normalise_slurm_state(raw: str | None, expected: str | None) -> None:
    assert normalise_slurm_state(raw) == expected


def test_specific_cause_beats_generic_snakemake_rule_error() -> None:
    text = (
        "[E::bwa_idx_load_from_disk] fail to locate the index files\n"
        "Error in rule bwa_map:\n"
        "    jobid: 4\n"
        "RuleException:\n"
        "CalledProcessError in file /wf/Snakefile, line 22:\n"
        "Command 'bwa mem ref.fa a.fq b.fq' returned non-zero exit status 1.\n"
        "Shutting down, this might take some time.\n"
        "Exiting because a job execution failed. Look above for error message\n"
    )
    codes = [candidate.code for candidate in classify_error(text, exit_code=1).candidates]
    assert codes[0] == "WS-DAT-006"
    assert "WS-PIP-002" in codes[1:]


def test_regex_and_exit_code_beats_exit_code_only() -> None:
    exit_only = _entry("WS-PIP-901", exit_codes=[1], signals=[6])
    regex_and_exit = _entry("WS-PIP-902", patterns=["fatal: widget exploded"], exit_codes=[1])
    for entries in ([exit_only, regex_and_exit], [regex_and_exit, exit_only]):
        diagnosis = classify_error("fatal: widget exploded\n", exit_code=1, signal=6, entries=entries)
        assert [candidate.code for candidate in diagnosis.candidates] == ["WS-PIP-902", "WS-PIP-901"]


def test_longer_pattern_beats_shorter_pattern_on_the_same_line() -> None:
    short = _entry("WS-PIP-901", patterns=["index"])
    long = _entry("WS-PIP-902", patterns=["fail to locate the index files"])
    line = "[E::bwa_idx_load_from_disk] fail to locate the index files\n"
    for entries in ([short, long], [long, short]):
        assert classify_error(line, entries=entries).top.code == "WS-PIP-902"


def test_equal_scores_prefer_the_more_specific_pattern() -> None:
    # 20 + 0.5*10 + signal 15 == 20 + 0.5*40: same score, different pattern specificity.
    short_plus_signal = _entry("WS-PIP-901", patterns=["aaaaaaaaaa"], signals=[6])
    long_pattern = _entry("WS-PIP-902", patterns=["a" * 10 + "b" * 30])
    text = "a" * 10 + "b" * 30 + "\n"
    for entries in ([short_plus_signal, long_pattern], [long_pattern, short_plus_signal]):
        diagnosis = classify_error(text, signal=6, entries=entries)
        assert diagnosis.candidates[0].score == diagnosis.candidates[1].score
        assert [candidate.code for candidate in diagnosis.candidates] == ["WS-PIP-902", "WS-PIP-901"]


def test_identical_evidence_ties_break_by_code_not_registration_order() -> None:
    first = _entry("WS-PIP-902", patterns=["widget exploded"])
    second = _entry("WS-PIP-901", patterns=["widget exploded"])
    for entries in ([first, second], [second, first]):
        diagnosis = classify_error("widget exploded\n", entries=entries)
        assert [candidate.code for candidate in diagnosis.candidates] == ["WS-PIP-901", "WS-PIP-902"]


def test_ranking_is_independent_of_catalog_order(corpus_items: list[dict[str, Any]]) -> None:
    entries = list(catalog())
    rng = random.Random(20240521)
    for item in corpus_items:
        arguments = {key: item.get(key) for key in ("exit_code", "signal", "slurm_state")}
        reference = _ranking(classify_error(item["text"], **arguments))
        for _ in range(3):
            shuffled = entries[:]
            rng.shuffle(shuffled)
            shuffled_ranking = _ranking(classify_error(item["text"], **arguments, entries=shuffled))
            assert shuffled_ranking == reference, item["id"]


def test_evidence_line_numbers_count_from_the_start_of_a_long_log() -> None:
    noise = ["progress line"] * (MAX_SCANNED_LINES + 50)
    text = "\n".join([*noise, "No space left on device"])
    top = classify_error(text).top
    assert top.code == "WS-RES-004"
    assert top.evidence_lines[0].line_number == MAX_SCANNED_LINES + 51


def test_matches_only_in_the_scanned_tail() -> None:
    text = "\n".join(["No space left on device", *(["progress line"] * MAX_SCANNED_LINES)])
    assert classify_error(text).top.code == UNKNOWN_CODE


def test_matching_ignores_case() -> None:
    assert classify_error("ERROR: NO SPACE LEFT ON DEVICE\n").top.code == "WS-RES-004"


# The scheduler's own states: MAX_DURATION (it stopped a run over max_duration_seconds) and LOST
# (the job vanished). Both come in workset.failed's native_state, passed as slurm_state.
MAX_DURATION_MESSAGE = (
    "stamen: ran longer than its max duration of 3600s; the job was stopped (max duration exceeded)\n"
)
HUNG_DOWNLOAD_LOG = """\
[Thu Mar 14 02:10:00 2024] rule fetch_reference:
Connecting to ftp.example.org (ftp.example.org)|192.0.2.10|:443... failed: Connection timed out.
Error in rule fetch_reference:
    jobid: 2
Traceback (most recent call last):
"""
PROGRESS_LOG = """\
[M::process] read 662252 sequences (80000167 bp)...
[M::mem_process_seqs] Processed 662252 reads in 744.129 CPU sec, 47.321 real sec
"""


def test_max_duration_state_alone_is_a_configuration_failure_not_retried() -> None:
    diagnosis = classify_error("", slurm_state="MAX_DURATION")
    assert [candidate.code for candidate in diagnosis.candidates] == ["WS-CFG-010"]
    top = diagnosis.top
    assert top.category is ErrorCategory.CONFIGURATION
    assert top.retry_class is RetryClass.CONFIGURATION
    assert not is_retryable(top.code)
    assert top.matched_facts == ("job state MAX_DURATION",)


def test_max_duration_with_the_scheduler_message_cites_it_as_evidence() -> None:
    state_only = classify_error("", slurm_state="MAX_DURATION").top
    top = classify_error(MAX_DURATION_MESSAGE, slurm_state="MAX_DURATION").top
    assert top.code == "WS-CFG-010"
    assert [line.line_number for line in top.evidence_lines] == [1]
    assert "max duration" in top.evidence_lines[0].text
    assert top.score > state_only.score


def test_max_duration_outranks_what_the_stopped_run_logged() -> None:
    # A run stopped mid-way can leave anything in its log, and the kill can look like an OOM kill
    # (137/SIGKILL); the scheduler's own verdict must still come first.
    diagnosis = classify_error(HUNG_DOWNLOAD_LOG, exit_code=137, signal=9, slurm_state="MAX_DURATION")
    codes = [candidate.code for candidate in diagnosis.candidates]
    assert codes[0] == "WS-CFG-010"
    assert {"WS-NET-001", "WS-RES-001", "WS-PIP-002"} <= set(codes[1:])


def test_max_duration_patterns_ignore_a_config_error_naming_the_field() -> None:
    text = "1 validation error for WorksetSpec\nmax_duration_seconds\n  Input should be greater than or equal to 1\n"
    codes = [candidate.code for candidate in classify_error(text, exit_code=2).candidates]
    assert codes[0] == "WS-CFG-002"
    assert "WS-CFG-010" not in codes


@pytest.mark.parametrize("state", ["LOST", "lost"])
def test_lost_state_alone_is_a_transient_cluster_failure_retried(state: str) -> None:
    diagnosis = classify_error("", slurm_state=state)
    assert [candidate.code for candidate in diagnosis.candidates] == ["WS-CLU-009"]
    top = diagnosis.top
    assert top.category is ErrorCategory.CLUSTER
    assert top.retry_class is RetryClass.TRANSIENT
    assert is_retryable(top.code)
    assert top.matched_facts == ("job state LOST",)


def test_lost_outranks_generic_matches_in_the_log() -> None:
    text = PROGRESS_LOG + "Error in rule bwa_map:\n    jobid: 4\nTraceback (most recent call last):\n"
    diagnosis = classify_error(text, exit_code=1, slurm_state="LOST")
    codes = [candidate.code for candidate in diagnosis.candidates]
    assert codes[0] == "WS-CLU-009"
    assert {"WS-PIP-002", "WS-PIP-014"} <= set(codes[1:])


def test_lost_with_only_progress_in_the_log_has_no_other_candidate() -> None:
    diagnosis = classify_error(PROGRESS_LOG, slurm_state="LOST")
    assert [candidate.code for candidate in diagnosis.candidates] == ["WS-CLU-009"]
    assert diagnosis.log_tail[-1].startswith("[M::mem_process_seqs]")


@pytest.mark.parametrize("state", ["TIMEOUT", "TIMEOUT (from slurmstepd's message)", "DEADLINE"])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "slurmstepd: error: *** JOB 4412907 ON cn0231 CANCELLED AT 2024-03-07T04:11:02 DUE TO TIME LIMIT ***\n",
    ],
)
def test_slurm_time_limit_still_maps_to_the_time_limit_code(state: str, text: str) -> None:
    diagnosis = classify_error(text, slurm_state=state)
    assert diagnosis.top.code == "WS-CLU-001"
    assert diagnosis.top.retry_class is RetryClass.RESOURCE
    assert "WS-CFG-010" not in [candidate.code for candidate in diagnosis.candidates]


# --- wrappers and causes -----------------------------------------------------------------------------
NEXTFLOW_WRAPPER = """\
Error executing process > 'SORT (s1)'

Caused by:
  Process `SORT (s1)` terminated with an error exit status ({status})

Command executed:

  samtools sort -@ 8 in.bam -o out.bam

Command exit status:
  {status}

Command output:
  (empty)
"""


@pytest.mark.parametrize(("status", "code"), [(137, "WS-RES-001"), (127, "WS-CFG-004"), (139, "WS-PIP-013")])
def test_the_exit_status_a_wrapper_reports_stands_in_for_an_unknown_exit_code(status: int, code: str) -> None:
    top = classify_error(NEXTFLOW_WRAPPER.format(status=status)).top
    assert top.code == code
    assert top.matched_facts == (f"exit code {status} (reported in the log)",)


def test_the_callers_exit_code_wins_over_one_reported_in_the_log() -> None:
    diagnosis = classify_error(NEXTFLOW_WRAPPER.format(status=137), exit_code=1)
    assert all("reported" not in fact for c in diagnosis.candidates for fact in c.matched_facts)
    assert diagnosis.top.code != "WS-RES-001"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["Command 'x' returned non-zero exit status 137."], 137),
        (["srun: error: node1: task 0: Exited with exit code 2"], 2),
        (["Command exit status:", "", "  143"], 143),
        (["terminated with an error exit status (1)", "later: returned non-zero exit status 139."], 139),
        (["Command exit status:", "  -"], None),  # Nextflow's "-": the task never ran
        (["exit status (0)"], None),
    ],
)
def test_reported_exit_status_is_the_last_one_in_the_log(lines: list[str], expected: int | None) -> None:
    assert reported_exit_status(lines) == expected


def test_a_cause_behind_a_container_wrapper_outranks_the_wrapper() -> None:
    text = "Task failed to start - CannotPullContainerError: write /var/lib/docker/tmp/x: no space left on device"
    assert classify_error(text).top.code == "WS-RES-004"
    assert classify_error(
        "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    ).top.code == ("WS-CFG-006")


def test_locale_warnings_and_cleanup_are_not_evidence_of_a_missing_input() -> None:
    text = (
        "/usr/local/bin/picard: line 5: warning: setlocale: LC_ALL: cannot change locale (en_US.UTF-8): "
        "No such file or directory\n"
        "rm: cannot remove '/scratch/tmp1/part.bam': No such file or directory\n"
        "WARNING: Unable to load libgkl_compression.so from native/libgkl_compression.so (No space left on device)\n"
    )
    codes = [c.code for c in classify_error(text).candidates]
    assert codes == ["WS-RES-004"]


def test_tiers_rank_cause_then_family_then_wrapper_whatever_the_wording() -> None:
    # The family and wrapper patterns are long and the cause's is short: the tier still decides.
    cause = _entry("WS-PIP-903", patterns=["oops"])
    family = _entry("WS-PIP-902", tier="family", patterns=["widget reported an error while frobnicating"])
    wrapper = _entry(
        "WS-PIP-901", tier="wrapper", patterns=["the step failed, see the log above for details"]
    )
    text = (
        "the step failed, see the log above for details\nwidget reported an error while frobnicating: oops\n"
    )
    for entries in ([cause, family, wrapper], [wrapper, family, cause]):
        codes = [candidate.code for candidate in classify_error(text, entries=entries).candidates]
        assert codes == ["WS-PIP-903", "WS-PIP-902", "WS-PIP-901"]


def test_a_wrapper_never_hides_the_exit_status_it_reports() -> None:
    text = "Workflow execution completed unsuccessfully!\nThe exit status of the task that caused the workflow execution to fail was: 137.\n"
    diagnosis = classify_error(text)
    assert diagnosis.top.code == "WS-RES-001"
    assert "WS-PIP-017" in [candidate.code for candidate in diagnosis.candidates]


def test_a_family_match_gives_its_category_and_retry_class_instead_of_unknown() -> None:
    top = classify_error("sbatch: error: --array and --dependency=singleton may not be combined here").top
    assert (top.code, top.category, top.retry_class) == (
        "WS-CLU-013",
        ErrorCategory.CLUSTER,
        RetryClass.CONFIGURATION,
    )
    top = classify_error("curl: (65) necessary data rewind wasn't possible").top
    assert (top.category, top.retry_class.is_retryable) == (ErrorCategory.NETWORK, True)


def test_two_wordings_of_one_message_are_one_piece_of_evidence() -> None:
    both = _entry("WS-PIP-901", patterns=["Could not resolve host", r"curl: \(6\)"])
    other = _entry("WS-PIP-902", patterns=["The requested URL returned error: 404"])
    text = "curl: (22) The requested URL returned error: 404\ncurl: (6) Could not resolve host: mirror\n"
    scores = {
        candidate.code: candidate.score
        for candidate in classify_error(text, entries=[both, other]).candidates
    }
    assert scores["WS-PIP-901"] == 20 + 0.5 * len("Could not resolve host")  # no bonus for the second wording
    assert scores["WS-PIP-902"] > scores["WS-PIP-901"]


def test_a_wording_that_names_only_the_kind_weighs_as_a_family() -> None:
    # The errno text is a cause entry's family_patterns: alone it still names the entry, at family weight;
    # next to a message saying what is missing (MUNGE's key file) it yields.
    alone = classify_error("open('/data/in.bam'): No such file or directory").top
    assert (alone.code, alone.score) == ("WS-DAT-005", 18.0)
    text = 'munged: Error: Failed to check keyfile "/etc/munge/munge.key": No such file or directory'
    assert classify_error(text).top.code == "WS-CLU-010"


def test_a_kind_only_wording_still_corroborates_its_cause() -> None:
    entry = _entry("WS-PIP-901", patterns=["widget exploded"], family_patterns=["Segmentation fault"])
    text = "widget exploded at 0x0\nSegmentation fault (core dumped)\n"
    (candidate,) = classify_error(text, entries=[entry]).candidates
    assert candidate.score == 20 + 0.5 * len("widget exploded") + 4


def test_a_crash_yields_to_the_error_the_tool_printed_before_it() -> None:
    text = '[E::bcf_hdr_parse_line] Could not parse the header line: "##INFO=<ID=X"\nSegmentation fault\n'
    assert classify_error(text).top.category is ErrorCategory.DATA
    assert classify_error("Segmentation fault (core dumped)\n").top.code == "WS-PIP-013"


def test_family_patterns_belong_to_cause_entries() -> None:
    with pytest.raises(ValueError, match="family_patterns belong to cause entries"):
        _entry("WS-PIP-901", tier="family", patterns=["x widget"], family_patterns=["y widget"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("make: *** [Makefile:12: out.bam] Error 137", 137),
        ("Execution failed: action 2: unexpected exit status 139 was not ignored", 139),
    ],
)
def test_more_wrappers_report_exit_statuses(line: str, expected: int) -> None:
    assert reported_exit_status([line]) == expected


def test_a_slurm_daemon_that_cannot_start_is_a_configuration_failure() -> None:
    top = classify_error("slurmd: fatal: Unable to determine this slurmd's NodeName").top
    assert (top.code, top.category, top.retry_class) == (
        "WS-CLU-015",
        ErrorCategory.CLUSTER,
        RetryClass.CONFIGURATION,
    )
    stepd = classify_error("slurmstepd: error: *** JOB 12 STEPD TERMINATED ON n1 DUE TO JOB NOT RUNNING ***")
    assert stepd.top.code != "WS-CLU-015"


def test_a_hint_decides_only_when_nothing_else_matched() -> None:
    hint = _entry("WS-PIP-901", hint_patterns=["failed to open"])
    wrapper = _entry("WS-PIP-902", tier="wrapper", patterns=["Error in rule"])
    (alone,) = classify_error("ERROR: failed to open sample.tsv\n", entries=[hint, wrapper]).candidates
    assert (alone.code, alone.from_hints, alone.score) == ("WS-PIP-901", True, 6.0)
    assert "low confidence" in alone.matched_facts[0]
    # Any other evidence, even a wrapper, drops the hint-only candidate entirely.
    text = "Error in rule align:\nERROR: failed to open sample.tsv\n"
    assert [c.code for c in classify_error(text, entries=[hint, wrapper]).candidates] == ["WS-PIP-902"]
    # A hint line next to the entry's own pattern is no evidence of its own.
    both = _entry("WS-PIP-903", patterns=["widget exploded"], hint_patterns=["failed to open"])
    (candidate,) = classify_error("widget exploded\nfailed to open x\n", entries=[both]).candidates
    assert candidate.score == 20 + 0.5 * len("widget exploded") and not candidate.from_hints


def test_a_tool_name_hint_outranks_a_generic_wording() -> None:
    wording = _entry("WS-PIP-901", hint_patterns=["failed to open"])
    tool = _entry("WS-PIP-902", tool_hint_patterns=[r"\bwget\b"])
    ranked = classify_error("wget: failed to open output.fa\n", entries=[wording, tool]).candidates
    assert [(c.code, c.score) for c in ranked] == [("WS-PIP-902", 7.0), ("WS-PIP-901", 6.0)]


def test_the_packaged_hints_give_unknown_logs_a_category_but_not_noise() -> None:
    top = classify_error("ERROR: Only 14 usable sites after depth filters; need at least 20").top
    assert (top.category, top.from_hints) == (ErrorCategory.DATA, True)
    top = classify_error("[2024-01-01] prefetch: connection unexpected while executing query").top
    assert top.category is ErrorCategory.NETWORK
    assert classify_error("Processed 120000 transcripts\nsomething went sideways at stage 4\n").is_unknown
