-- The two lifecycles get the CHECK every other enumerated column has: a workset's state is one of
-- stamen.domain.lifecycle.WorksetState, a step run's one of stamen.domain.steps.StepRunState
-- (tests/store/test_check_constraints.py keeps these lists and the enums in step). NOT VALID, then
-- VALIDATE: the scan of existing rows does not block writers.
ALTER TABLE worksets ADD CONSTRAINT worksets_state_check CHECK (state IN (
    'submitted', 'validating', 'rejected', 'queued', 'scheduled', 'running', 'retry_wait', 'completed',
    'failed', 'dead_lettered', 'cancelled', 'archived')) NOT VALID;
ALTER TABLE worksets VALIDATE CONSTRAINT worksets_state_check;

ALTER TABLE step_runs ADD CONSTRAINT step_runs_state_check CHECK (state IN (
    'submitting', 'pending', 'running', 'succeeded', 'failed', 'cancelled', 'timeout', 'out_of_memory',
    'node_fail', 'preempted', 'lost')) NOT VALID;
ALTER TABLE step_runs VALIDATE CONSTRAINT step_runs_state_check;
