-- The admitted worksets (scheduled or running: those holding a slot), found without reading the others. The
-- scheduler's survey asks four questions of them at every pass (admitted with nothing submitted, in a down
-- region, a cancel to carry out, past their max duration), and the dispatcher's claim and the stop pass read
-- them; with no index led by the state, each was a full scan of worksets_tenant_state (~0.4 ms per question
-- at 200,000 worksets), growing with the history. Small: it holds the worksets in flight only.
CREATE INDEX worksets_admitted ON worksets (id) WHERE state IN ('scheduled', 'running');
