-- The browser console's sign-in: one-time codes (the link `ai2text up` prints) and
-- the sessions a code or a pasted token opens. Only SHA-256 digests of the codes and
-- session ids are kept: whoever reads this table cannot sign in with what it holds.
-- A session carries the claims of what opened it (subject, tenant, scopes), expires,
-- and signing out deletes it.

CREATE TABLE console_signin_codes (
    code_sha256  bytea PRIMARY KEY CHECK (length(code_sha256) = 32),
    subject      text NOT NULL,
    tenant       text,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_signin_codes_expiry ON console_signin_codes (expires_at);

CREATE TABLE console_sessions (
    id_sha256    bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    subject      text NOT NULL,
    tenant       text,
    scopes       text[] NOT NULL,
    -- Sent back by the console with every state change (X-CSRF-Token).
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
