-- The state store as released before schema versioning (schema version 1): each module's tables
-- exactly as it created them then (git c87312b), and one row in each. Frozen: never edit.
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    latency_ms REAL,
    created_at TEXT
);
CREATE TABLE IF NOT EXISTS rollout_state (
    use_case TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    candidate_weight INTEGER NOT NULL CHECK (candidate_weight BETWEEN 0 AND 100),
    shadow INTEGER NOT NULL CHECK (shadow IN (0, 1)),
    incumbent TEXT, candidate TEXT, policy TEXT NOT NULL,
    step_started_at INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, consecutive_errors INTEGER NOT NULL DEFAULT 0,
    inconclusive INTEGER NOT NULL DEFAULT 0,
    reason TEXT, evidence TEXT,
    alert_pending INTEGER NOT NULL DEFAULT 0, alert_claimed_at INTEGER,
    version INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    CHECK (stage NOT IN ('idle', 'reverted') OR (candidate_weight = 0 AND shadow = 0)),
    CHECK (stage != 'promoted' OR (candidate_weight = 100 AND shadow = 0))
);
CREATE TABLE IF NOT EXISTS rollout_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    use_case TEXT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
    from_stage TEXT NOT NULL, to_stage TEXT NOT NULL,
    candidate_weight INTEGER NOT NULL, shadow INTEGER NOT NULL,
    reason TEXT, evidence TEXT, ts INTEGER NOT NULL,
    UNIQUE (use_case, version)
);
CREATE TABLE IF NOT EXISTS traffic_log (
    request_id TEXT NOT NULL, ts INTEGER NOT NULL, use_case TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error_type TEXT, cost_usd REAL,
    request TEXT, response TEXT, metadata TEXT, rollout_stage TEXT,
    arm TEXT NOT NULL CHECK (arm IN ('incumbent', 'candidate', 'shadow'))
);
CREATE INDEX IF NOT EXISTS traffic_log_use_case_ts ON traffic_log (use_case, ts);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL, use_case TEXT NOT NULL, model TEXT NOT NULL, rule TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    severity TEXT, value REAL, threshold REAL, baseline REAL, detail TEXT,
    report_only INTEGER NOT NULL DEFAULT 0,
    opened_at TEXT NOT NULL, last_seen_at TEXT NOT NULL, resolved_at TEXT,
    last_alert_at TEXT, last_alert_severity TEXT, action TEXT, flow_run_url TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents(key) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL CHECK (kind IN ('opened', 'escalated', 'reminder', 'resolved')),
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at TEXT,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS monitor_windows (
    use_case TEXT NOT NULL, model TEXT NOT NULL, window_end TEXT NOT NULL,
    requests INTEGER NOT NULL, error_rate REAL, latency_p95_ms REAL, cost_per_request REAL,
    breached INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (use_case, model, window_end)
);
INSERT INTO response_cache VALUES ('k1', 'openai/gpt-4o-mini', 'billing', 10, 1, 0.001, 120.5, '2026-11-01T00:00:00+00:00');
INSERT INTO rollout_state (use_case, stage, step_index, candidate_weight, shadow, incumbent, candidate, policy, step_started_at, version, updated_at) VALUES ('ticket-routing', 'step', 2, 10, 0, 'gpt-4o-mini', 'qwen', '{"steps": [5, 10]}', 1700000000, 3, 1700000000);
INSERT INTO rollout_history (use_case, version, action, from_stage, to_stage, candidate_weight, shadow, ts) VALUES ('ticket-routing', 3, 'advance', 'shadow', 'step', 10, 0, 1700000000);
INSERT INTO traffic_log (request_id, ts, use_case, model, status, arm) VALUES ('r1', 1700000000, 'ticket-routing', 'qwen', 'ok', 'candidate');
INSERT INTO incidents (key, use_case, model, rule, status, opened_at, last_seen_at) VALUES ('i1', 'ticket-routing', 'qwen', 'error_rate', 'open', '2026-11-01', '2026-11-01');
INSERT INTO monitor_windows (use_case, model, window_end, requests) VALUES ('ticket-routing', 'qwen', '2026-11-01T00:05:00', 42);
