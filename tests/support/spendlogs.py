"""A LiteLLM proxy's spend-log table in a real PostgreSQL, for tests and benchmarks.

``SPEND_LOGS_DDL`` is what Prisma creates from LiteLLM's ``schema.prisma`` (``model
LiteLLM_SpendLogs``: ``DateTime`` -> ``TIMESTAMP(3)``, ``Json`` -> ``JSONB``, ``Float`` ->
``DOUBLE PRECISION``). ``generate_spend_logs`` fills it inside PostgreSQL with ``generate_series``
(a million rows in seconds, no Python row objects); ``copy_spend_logs`` adds hand-written rows
through ``COPY ... FROM STDIN``; ``export_csv`` writes what a team's export would be.

The generated rows look like a proxy's: four tagged use cases on four models (tags in the
metadata, or only in ``request_tags`` as newer proxies write them), untagged calls, failures
(``status = 'failure'``, no spend, an ``error_information``), and the secrets a real table holds
(hashed ``api_key``, the key hash again in ``metadata.user_api_key``, forwarded ``Authorization``
headers), which must never leave the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

SPEND_LOGS_DDL = """
CREATE TABLE "LiteLLM_SpendLogs" (
    "request_id" TEXT NOT NULL,
    "call_type" TEXT NOT NULL,
    "api_key" TEXT NOT NULL DEFAULT '',
    "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    "total_tokens" INTEGER NOT NULL DEFAULT 0,
    "prompt_tokens" INTEGER NOT NULL DEFAULT 0,
    "completion_tokens" INTEGER NOT NULL DEFAULT 0,
    "startTime" TIMESTAMP(3) NOT NULL,
    "endTime" TIMESTAMP(3) NOT NULL,
    "request_duration_ms" INTEGER,
    "completionStartTime" TIMESTAMP(3),
    "model" TEXT NOT NULL DEFAULT '',
    "model_id" TEXT DEFAULT '',
    "model_group" TEXT DEFAULT '',
    "custom_llm_provider" TEXT DEFAULT '',
    "api_base" TEXT DEFAULT '',
    "user" TEXT DEFAULT '',
    "metadata" JSONB DEFAULT '{}',
    "cache_hit" TEXT DEFAULT '',
    "cache_key" TEXT DEFAULT '',
    "request_tags" JSONB DEFAULT '[]',
    "team_id" TEXT,
    "organization_id" TEXT,
    "end_user" TEXT,
    "requester_ip_address" TEXT,
    "messages" JSONB DEFAULT '{}',
    "response" JSONB DEFAULT '{}',
    "session_id" TEXT,
    "status" TEXT,
    "mcp_namespaced_tool_name" TEXT,
    "billing_agent_id" TEXT,
    "agent_id" TEXT,
    "proxy_server_request" JSONB DEFAULT '{}',
    "litellm_call_id" TEXT,
    "created_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP
)"""

# The primary key and Prisma's @@index lines that matter to a time-window read; added after a
# bulk load, which is several times faster than maintaining them row by row.
SPEND_LOGS_INDEXES = (
    'ALTER TABLE "LiteLLM_SpendLogs" ADD CONSTRAINT "LiteLLM_SpendLogs_pkey" PRIMARY KEY ("request_id")',
    'CREATE INDEX "LiteLLM_SpendLogs_startTime_idx" ON "LiteLLM_SpendLogs"("startTime")',
    (
        'CREATE INDEX "LiteLLM_SpendLogs_startTime_request_id_idx" '
        'ON "LiteLLM_SpendLogs"("startTime", "request_id")'
    ),
)

# One row per use case: model, provider, prompt and completion tokens (base + spread), list
# prices per token, where its tags live, and how many distinct answers it gives.
PROFILES = """(VALUES
    (0, 'ticket-routing',     'gpt-4o-mini',       'openai',    150,  200,   2,   1, 0.15e-6, 0.6e-6, 'both',           4),
    (1, 'invoice-extraction', 'gpt-4o-mini',       'openai',    800,  500,  60,  30, 0.15e-6, 0.6e-6, 'request_tags',  50),
    (2, 'call-summaries',     'gpt-4o',            'openai',   2000, 1000, 150, 100, 2.5e-6,  10e-6,  'metadata',     100),
    (3, 'support-agent',      'claude-sonnet-4-5', 'anthropic', 3000, 2000, 300, 200, 3e-6,   15e-6,  'metadata',     100),
    (4, NULL,                 'gpt-4o-mini',       'openai',    300,  100,  40,  20, 0.15e-6, 0.6e-6, 'none',         100)
) AS p(profile, use_case, model, provider, prompt_base, prompt_spread, completion_base, completion_spread,
       input_price, output_price, tag_place, answers)"""  # noqa: E501

# Per-row work is arithmetic and md5 only: every JSON value (metadata per key × use case ×
# outcome, 200 prompts and up to 100 answers per use case) is built once in a small lookup
# table and joined, which keeps a million rows at seconds.
GENERATE_SQL = """
WITH profiles AS (SELECT * FROM {profiles}),
keys AS (
    SELECT k, encode(sha256(('sk-virtual-key-' || k)::bytea), 'hex') AS hash FROM generate_series(0, 12) AS k),
meta AS (
    SELECT k, profile, failed, jsonb_strip_nulls(jsonb_build_object(
        'tags', CASE WHEN tag_place IN ('both', 'metadata') THEN jsonb_build_array('use_case:' || use_case, 'env:prod') END,
        'user_api_key', hash, 'user_api_key_alias', 'team-' || k % 5 || '-key', 'user_api_key_team_id', 'team-' || k % 5,
        'headers', CASE WHEN k = 0 THEN jsonb_build_object('authorization', 'Bearer sk-live-' || md5('header' || k)) END,
        'error_information', CASE WHEN failed THEN jsonb_build_object('error_class', 'RateLimitError', 'error_code', '429') END
    )) AS metadata
    FROM keys CROSS JOIN profiles CROSS JOIN (VALUES (false), (true)) AS f(failed)),
prompts AS (
    SELECT profile, v, CASE WHEN profile = 3 THEN jsonb_build_array(
            jsonb_build_object('role', 'system', 'content', 'You are the support agent.'),
            jsonb_build_object('role', 'user', 'content', 'Where is order ' || v || '?'),
            jsonb_build_object('role', 'assistant', 'tool_calls', jsonb_build_array(jsonb_build_object('id', 'call_' || v,
                'type', 'function', 'function', jsonb_build_object('name', 'lookup_order', 'arguments', '{"id": ' || v || '}')))),
            jsonb_build_object('role', 'tool', 'tool_call_id', 'call_' || v, 'content', '{"status": "shipped"}'))
        ELSE jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Request ' || v || ': my card was charged twice'))
        END AS messages
    FROM profiles CROSS JOIN generate_series(0, 199) AS v),
answers AS (
    SELECT profile, v, jsonb_build_object('model', model, 'choices', jsonb_build_array(jsonb_build_object(
            'message', jsonb_build_object('role', 'assistant', 'content', CASE profile
                WHEN 0 THEN (ARRAY['billing', 'shipping', 'refund', 'technical'])[v + 1]
                WHEN 1 THEN '{"total": ' || v || '.50, "currency": "EUR"}'
                ELSE 'Summary: the customer asked about order ' || v || ' and was helped.' END)))) AS response
    FROM profiles CROSS JOIN generate_series(0, 99) AS v WHERE v < answers),
calls AS (
    SELECT g, p.*, g % 97 = 0 AS failed, prompt_base + g % prompt_spread AS prompt,
           CASE WHEN g % 97 = 0 THEN 0 ELSE completion_base + g % completion_spread END AS completion,
           {start}::timestamp + ((g * 7919) % ({days} * 86400)) * interval '1 second'
               + (g % 1000) * interval '1 millisecond' AS start
    FROM generate_series({first}::bigint, {last}::bigint) AS g
    JOIN profiles AS p ON p.profile = CASE WHEN g % 20 < 8 THEN 0 WHEN g % 20 < 12 THEN 1 WHEN g % 20 < 15 THEN 2
                                           WHEN g % 20 < 17 THEN 3 ELSE 4 END)
INSERT INTO "LiteLLM_SpendLogs" ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens",
    "completion_tokens", "startTime", "endTime", "model", "model_group", "custom_llm_provider", "user",
    "metadata", "request_tags", "messages", "response", "status", "proxy_server_request")
SELECT 'chatcmpl-' || md5(c.g::text), 'acompletion', k.hash,
       CASE WHEN c.failed THEN 0 ELSE c.prompt * c.input_price + c.completion * c.output_price END,
       c.prompt + c.completion, c.prompt, c.completion, c.start, c.start + (180 + c.g % 2400) * interval '1 millisecond',
       c.model, c.model, c.provider, 'user-' || c.g % 50, m.metadata,
       CASE WHEN c.tag_place IN ('both', 'request_tags') THEN jsonb_build_array('use_case:' || c.use_case) ELSE '[]' END,
       q.messages, CASE WHEN c.failed THEN '{}'::jsonb ELSE a.response END,
       CASE WHEN c.failed THEN 'failure' ELSE 'success' END,
       CASE WHEN c.g % 1000 = 0 THEN jsonb_build_object('headers', jsonb_build_object(
           'authorization', 'Bearer sk-proxy-' || md5('proxy' || c.g))) ELSE '{}'::jsonb END
FROM calls AS c
JOIN keys AS k ON k.k = c.g % 13
JOIN meta AS m ON (m.k, m.profile, m.failed) = (k.k, c.profile, c.failed)
JOIN prompts AS q ON (q.profile, q.v) = (c.profile, c.g % 200)
JOIN answers AS a ON (a.profile, a.v) = (c.profile, c.g % c.answers)
""".replace("{profiles}", PROFILES)  # noqa: E501


def create_spend_logs_table(conn) -> None:
    """The table as the LiteLLM proxy's Prisma migration creates it (keys and indexes come after loading)."""
    conn.execute(SPEND_LOGS_DDL)


def create_spend_logs_indexes(conn) -> None:
    for statement in SPEND_LOGS_INDEXES:
        conn.execute(statement)
    conn.execute('ANALYZE "LiteLLM_SpendLogs"')


def generate_spend_logs(conn, rows: int, start: str = "2025-04-01", days: int = 91, first: int = 1) -> None:
    """``rows`` realistic spend-log rows spread over ``days`` from ``start`` (UTC), made by PostgreSQL."""
    from psycopg import sql

    # Values go in as quoted literals, not parameters: the statement is then sent as written, so
    # its % operators and JSON braces need no escaping.
    values = {"start": start, "days": days, "first": first, "last": first + rows - 1}
    statement = GENERATE_SQL
    for name, value in values.items():
        statement = statement.replace("{" + name + "}", sql.Literal(value).as_string(conn))
    conn.execute(statement)


def copy_spend_logs(conn, rows: Sequence[dict]) -> None:
    """Hand-written rows through ``COPY ... FROM STDIN`` (every row names the same columns)."""
    from psycopg import sql

    columns = list(rows[0])
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier("LiteLLM_SpendLogs"), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def export_csv(conn, path: Path, query: str = 'SELECT * FROM "LiteLLM_SpendLogs"') -> Path:
    """What a team's export is: ``COPY (query) TO STDOUT WITH CSV HEADER``, streamed to a file."""
    with path.open("wb") as handle, conn.cursor().copy(f"COPY ({query}) TO STDOUT WITH CSV HEADER") as copy:
        for block in copy:
            handle.write(block)
    return path
