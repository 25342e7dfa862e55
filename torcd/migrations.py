"""Numbered schema migrations, applied in order at start (PRAGMA user_version)."""

MIGRATIONS: list[str] = [
    # 1: workflows, jobs, dependencies, failure handlers, attempts, event log
    """
    CREATE TABLE workflows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        cwd TEXT NOT NULL,
        spec_path TEXT NOT NULL,
        output_dir TEXT NOT NULL,
        use_pending_failed INTEGER,
        run_id INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL DEFAULT 'active',
        created REAL NOT NULL
    );
    CREATE TABLE failure_handlers (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        rules TEXT NOT NULL,
        UNIQUE (workflow_id, name)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        command TEXT NOT NULL,
        status INTEGER NOT NULL,
        attempt_id INTEGER NOT NULL DEFAULT 1,
        run_id INTEGER NOT NULL DEFAULT 1,
        num_cpus INTEGER NOT NULL DEFAULT 1,
        env TEXT,
        handler_id INTEGER REFERENCES failure_handlers(id),
        pending_deps INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        updated REAL NOT NULL,
        UNIQUE (workflow_id, name)
    );
    CREATE INDEX jobs_by_status ON jobs (status, id);
    CREATE INDEX jobs_by_workflow_status ON jobs (workflow_id, status);
    CREATE TABLE deps (
        job_id INTEGER NOT NULL,
        depends_on INTEGER NOT NULL,
        PRIMARY KEY (job_id, depends_on)
    ) WITHOUT ROWID;
    CREATE INDEX deps_by_upstream ON deps (depends_on, job_id);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        workflow_id INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        attempt_id INTEGER NOT NULL,
        host TEXT,
        pid INTEGER,
        start_time REAL NOT NULL,
        end_time REAL,
        return_code INTEGER,
        stdout_path TEXT NOT NULL,
        stderr_path TEXT NOT NULL,
        rule_index INTEGER,
        action TEXT,
        recovery_rc INTEGER,
        recovery_outcome TEXT,
        message TEXT,
        UNIQUE (job_id, run_id, attempt_id)
    );
    CREATE INDEX attempts_open ON attempts (end_time) WHERE end_time IS NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX events_by_workflow ON events (workflow_id, seq);
    """,
]
