-- What several server processes must share: sign-in attempts (the throttle) and the send rate.

-- Failed (or not yet checked) sign-in attempts of the last minute, by IP and by username.
CREATE TABLE signin_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ip TEXT NOT NULL,
    username TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX signin_attempts_ip ON signin_attempts (ip, at);
CREATE INDEX signin_attempts_user ON signin_attempts (username, at);

-- One token bucket per business number (BOT_SEND_RATE), shared by every process (PostgreSQL mode).
CREATE TABLE send_buckets (
    phone_number_id TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
);
