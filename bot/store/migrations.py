"""The schema, as numbered migrations applied in order (PRAGMA user_version holds the last one).

Migration 5 is the step log's markers: `submit_started_at` (a submission may exist at the backend),
`request_key` (one job per Slack request, enforced by a unique index), `upload_ts` and
`card_claimed_at` (the result card may already be in the thread). A job's status, card and upload
messages are found through `generations` itself; `job_messages` keeps the other cards (reposts).

Migration 6 indexes images by Slack file id: the bot's own file_share event names only files, and the
upload message's ts is recorded on the job that holds them.

Migration 7 records where each result's bytes are kept as a reference: the content key (and mimetype)
of the file in the reference cache, so a later iteration hosts those bytes instead of sending Oxen's
result URL back. Images made before it have none and are fetched back from Slack by file id.

Migration 8 is the table /healthz writes to (and empties again) to learn whether the database can
take a write now (Store.writable).

Migration 9 indexes jobs by team, channel and creation time, so the channel half of
`Store.quota_usage` (team, user or channel, since) is a range search, as the user half already was
(SQLite runs the OR as a MULTI-INDEX OR over both); and by creation time (then team), for the usage
report's counts over the last days. Not (team_id, created_at): SQLite, without statistics, would then
answer the quota count from that one index, reading the whole team's day.

Migration 10 holds channel brand kits: `channel_kits` (default flags and style suffix per channel),
`kit_pins` (at most 3 pinned references per channel, each from one message) and `kit_pin_reactions`
(each person's :pushpin: on a message, with the event_ts of the last reaction event applied, so a
repeated or late delivery changes nothing).

Migration 11 is vote-to-pick. `vote_reactions` holds the state of each voting reaction as the latest
reaction event left it (one row per message, person and reaction name; `event_ts` keeps a late
redelivery from undoing a newer event); a person's votes for an image are the rows present for it,
counted once however many reactions carry them. `vote_rounds` are timed votes on a thread: at most one
open per thread (a unique index), `closed_at` is written before the winner is posted and `result_ts`
after, so a restart knows whether the post may exist.

Migration 12 holds prompt permutations (bot/features/permutations.py): a set per `/imagine` with braces
(its thread root, and its contact sheet's file id, message ts and posting time: the sheet's step log),
the set's variants with the job each became, and the sheet's tiles (which image each numbered tile
shows, for votes on the sheet).

Migration 14 holds `reference_blobs`: the bytes of each reference served under `/refs/` (public_url
hosting), one row per content key, written once, so a signed URL made by one replica is served by any
other. `published_at` is the last time a URL was signed for it (bot/features/reference_hosting.py);
housekeeping deletes rows not published for a week, as it prunes the local reference cache.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT,
        status_ts TEXT,
        card_ts TEXT,
        user_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        model TEXT NOT NULL,
        size TEXT NOT NULL,
        aspect_ratio TEXT,
        seed INTEGER NOT NULL,
        seed_given INTEGER NOT NULL,
        n INTEGER NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        notes TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'uploaded', 'failed', 'cancelled')),
        error TEXT,
        parent_id TEXT REFERENCES generations(id),
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX generations_by_user ON generations (team_id, user_id, created_at DESC);
    CREATE INDEX generations_unfinished ON generations (created_at)
        WHERE state IN ('queued', 'running') OR (state = 'uploaded' AND card_ts IS NULL);
    CREATE TABLE generation_images (
        job_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'succeeded', 'failed')),
        oxen_generation_id TEXT,
        error TEXT,
        file_id TEXT,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE processed_events (
        key TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    );
    """,
    """
    CREATE INDEX generations_by_thread ON generations (channel_id, thread_ts, created_at DESC);
    ALTER TABLE generation_images ADD COLUMN result_url TEXT;
    ALTER TABLE generation_images ADD COLUMN result_url_at REAL;
    """,
    """
    CREATE TABLE job_messages (
        channel_id TEXT NOT NULL,
        ts TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('status', 'card', 'upload')),
        thread_ts TEXT,
        PRIMARY KEY (channel_id, ts)
    );
    INSERT OR IGNORE INTO job_messages
        SELECT channel_id, status_ts, id, 'status', thread_ts FROM generations WHERE status_ts IS NOT NULL;
    INSERT OR IGNORE INTO job_messages
        SELECT channel_id, card_ts, id, 'card', thread_ts FROM generations WHERE card_ts IS NOT NULL;
    ALTER TABLE generations ADD COLUMN deleted_at REAL;
    ALTER TABLE generations ADD COLUMN deleted_by TEXT;
    """,
    """
    CREATE TABLE favourites (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        PRIMARY KEY (team_id, user_id, job_id)
    );
    """,
    """
    ALTER TABLE generation_images RENAME COLUMN oxen_generation_id TO generation_id;
    ALTER TABLE generation_images ADD COLUMN submit_started_at REAL;
    ALTER TABLE generations ADD COLUMN request_key TEXT;
    ALTER TABLE generations ADD COLUMN upload_ts TEXT;
    ALTER TABLE generations ADD COLUMN card_claimed_at REAL;
    CREATE UNIQUE INDEX generations_by_request ON generations (request_key);
    CREATE INDEX generations_by_status_message ON generations (channel_id, status_ts);
    CREATE INDEX generations_by_card ON generations (channel_id, card_ts);
    CREATE INDEX generations_by_upload ON generations (channel_id, upload_ts);
    """,
    """
    CREATE INDEX generation_images_by_file ON generation_images (file_id) WHERE file_id IS NOT NULL;
    """,
    """
    ALTER TABLE generation_images ADD COLUMN reference_key TEXT;
    ALTER TABLE generation_images ADD COLUMN reference_mimetype TEXT;
    """,
    """
    CREATE TABLE write_probe (id INTEGER PRIMARY KEY, payload BLOB);
    """,
    """
    CREATE INDEX generations_by_channel ON generations (team_id, channel_id, created_at);
    CREATE INDEX generations_by_time ON generations (created_at, team_id);
    """,
    """
    CREATE TABLE channel_kits (
        channel_id TEXT PRIMARY KEY,
        aspect_ratio TEXT,
        size TEXT,
        style TEXT,
        updated_by TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE kit_pins (
        channel_id TEXT NOT NULL,
        message_ts TEXT NOT NULL,
        source TEXT NOT NULL,
        ready_at REAL NOT NULL,
        pinned_at REAL NOT NULL,
        PRIMARY KEY (channel_id, message_ts)
    );
    CREATE TABLE kit_pin_reactions (
        channel_id TEXT NOT NULL,
        message_ts TEXT NOT NULL,
        user_id TEXT NOT NULL,
        active INTEGER NOT NULL,
        event_ts REAL NOT NULL,
        PRIMARY KEY (channel_id, message_ts, user_id)
    );
    """,
    """
    CREATE TABLE vote_reactions (
        channel_id TEXT NOT NULL,
        message_ts TEXT NOT NULL,
        user_id TEXT NOT NULL,
        reaction TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        present INTEGER NOT NULL,
        event_ts TEXT NOT NULL,
        PRIMARY KEY (channel_id, message_ts, user_id, reaction)
    );
    CREATE INDEX vote_reactions_by_image ON vote_reactions (job_id, idx) WHERE present = 1;
    CREATE TABLE vote_rounds (
        id INTEGER PRIMARY KEY,
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        request_key TEXT NOT NULL UNIQUE,
        opened_at REAL NOT NULL,
        deadline REAL NOT NULL,
        announce_ts TEXT,
        closed_at REAL,
        result_ts TEXT
    );
    CREATE UNIQUE INDEX vote_rounds_open ON vote_rounds (channel_id, thread_ts) WHERE closed_at IS NULL;
    CREATE INDEX vote_rounds_due ON vote_rounds (deadline) WHERE closed_at IS NULL;
    CREATE INDEX vote_rounds_unposted ON vote_rounds (closed_at) WHERE result_ts IS NULL;
    """,
    """
    CREATE TABLE permutation_sets (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        template TEXT NOT NULL,
        request_key TEXT UNIQUE,
        root_ts TEXT,
        abandoned_at REAL,
        sheet_file_id TEXT,
        sheet_ts TEXT,
        sheet_posted_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX permutation_sets_open ON permutation_sets (created_at)
        WHERE sheet_posted_at IS NULL AND abandoned_at IS NULL;
    CREATE INDEX permutation_sets_by_sheet ON permutation_sets (channel_id, sheet_ts);
    CREATE TABLE permutation_variants (
        set_id TEXT NOT NULL REFERENCES permutation_sets(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        label TEXT NOT NULL,
        job_id TEXT REFERENCES generations(id) ON DELETE SET NULL,
        PRIMARY KEY (set_id, number)
    );
    CREATE TABLE permutation_tiles (
        set_id TEXT NOT NULL REFERENCES permutation_sets(id) ON DELETE CASCADE,
        tile INTEGER NOT NULL,
        number INTEGER NOT NULL,
        job_id TEXT,
        image_idx INTEGER,
        label TEXT NOT NULL,
        PRIMARY KEY (set_id, tile)
    );
    """,
    """
    CREATE TABLE reference_blobs (
        key TEXT PRIMARY KEY,
        mimetype TEXT NOT NULL,
        bytes BLOB NOT NULL,
        created_at REAL NOT NULL,
        published_at REAL NOT NULL
    );
    CREATE INDEX reference_blobs_by_publication ON reference_blobs (published_at);
    """,
)
