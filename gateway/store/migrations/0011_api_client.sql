-- 0011: which API client (kiosk) started a session, and with what request. Kept beside the
-- session record (the engine's JSON), written in the step that creates the session.
-- api_client: the client id of [[api.clients]] ('' when the API takes no tokens); api_key: the
-- SHA-256 of the Idempotency-Key (a client may send any text there); api_request: the SHA-256
-- of the request (EVSE and target), so a reused key with another request is refused (422).
ALTER TABLE sessions ADD COLUMN api_client TEXT;
ALTER TABLE sessions ADD COLUMN api_key TEXT;
ALTER TABLE sessions ADD COLUMN api_request TEXT;
CREATE UNIQUE INDEX sessions_api_key ON sessions(api_client, api_key) WHERE api_key IS NOT NULL;
