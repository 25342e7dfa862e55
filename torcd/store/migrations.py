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
    # 2: Slurm allocations, their workers, and per-workflow auto-schedule policy
    """
    ALTER TABLE workflows ADD COLUMN executor TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE workflows ADD COLUMN account TEXT;
    ALTER TABLE workflows ADD COLUMN auto_schedule TEXT;
    ALTER TABLE workflows ADD COLUMN last_auto_submit REAL;
    ALTER TABLE jobs ADD COLUMN scheduler TEXT;
    ALTER TABLE jobs ADD COLUMN worker_id INTEGER;
    ALTER TABLE attempts ADD COLUMN worker_id INTEGER;
    CREATE TABLE schedulers (
        workflow_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        PRIMARY KEY (workflow_id, name)
    );
    CREATE TABLE allocations (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL,
        scheduler TEXT NOT NULL,
        slurm_job_id TEXT,
        state TEXT NOT NULL,
        slurm_state TEXT,
        cpus INTEGER NOT NULL,
        submitted REAL NOT NULL,
        started REAL,
        ended REAL,
        reason TEXT,
        script_path TEXT
    );
    CREATE INDEX allocations_by_state ON allocations (state, workflow_id);
    CREATE TABLE workers (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL,
        allocation_id INTEGER,
        host TEXT NOT NULL,
        cpus INTEGER NOT NULL,
        registered REAL NOT NULL,
        last_heartbeat REAL NOT NULL,
        state TEXT NOT NULL,
        ended REAL,
        reason TEXT
    );
    CREATE INDEX jobs_by_worker ON jobs (worker_id) WHERE worker_id IS NOT NULL;
    """,
    # 3: how long each recovery script ran (for metrics)
    """
    ALTER TABLE attempts ADD COLUMN recovery_seconds REAL;
    """,
    # 4: each allocation's own worker credential (a hash of it); results of state-changing
    # requests by idempotency key, so that a retried request is not applied twice
    """
    ALTER TABLE allocations ADD COLUMN credential_hash TEXT;
    CREATE TABLE requests (
        key TEXT PRIMARY KEY,
        result TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX requests_by_age ON requests (created);
    """,
    # 5: allocation and worker ids are never reused (a deleted workflow's credential or worker id
    # must not name a new one)
    """
    CREATE TABLE allocations_v5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id INTEGER NOT NULL,
        scheduler TEXT NOT NULL,
        slurm_job_id TEXT,
        state TEXT NOT NULL,
        slurm_state TEXT,
        cpus INTEGER NOT NULL,
        submitted REAL NOT NULL,
        started REAL,
        ended REAL,
        reason TEXT,
        script_path TEXT,
        credential_hash TEXT
    );
    INSERT INTO allocations_v5 SELECT id, workflow_id, scheduler, slurm_job_id, state, slurm_state, cpus,
        submitted, started, ended, reason, script_path, credential_hash FROM allocations;
    DROP TABLE allocations;
    ALTER TABLE allocations_v5 RENAME TO allocations;
    CREATE INDEX allocations_by_state ON allocations (state, workflow_id);
    CREATE TABLE workers_v5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id INTEGER NOT NULL,
        allocation_id INTEGER,
        host TEXT NOT NULL,
        cpus INTEGER NOT NULL,
        registered REAL NOT NULL,
        last_heartbeat REAL NOT NULL,
        state TEXT NOT NULL,
        ended REAL,
        reason TEXT
    );
    INSERT INTO workers_v5 SELECT id, workflow_id, allocation_id, host, cpus, registered, last_heartbeat, state,
        ended, reason FROM workers;
    DROP TABLE workers;
    ALTER TABLE workers_v5 RENAME TO workers;
    """,
    # 6: what a job needs (its CPUs were there already), and why an attempt failed beyond its code
    """
    ALTER TABLE jobs ADD COLUMN num_gpus INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN memory_bytes INTEGER;
    ALTER TABLE jobs ADD COLUMN runtime_seconds REAL;
    ALTER TABLE attempts ADD COLUMN cause TEXT;
    ALTER TABLE attempts ADD COLUMN gpus TEXT;
    """,
    # 7: limits grown by failure-handler multipliers for the next attempts of a run, and the
    # limit each attempt ran under
    """
    ALTER TABLE jobs ADD COLUMN runtime_scale REAL NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN memory_scale REAL NOT NULL DEFAULT 1;
    ALTER TABLE attempts ADD COLUMN runtime_limit REAL;
    """,
    # 8: what each attempt used and the memory it was allowed; which jobs a workflow samples
    """
    ALTER TABLE attempts ADD COLUMN peak_rss_bytes INTEGER;
    ALTER TABLE attempts ADD COLUMN cpu_seconds REAL;
    ALTER TABLE attempts ADD COLUMN memory_limit INTEGER;
    ALTER TABLE workflows ADD COLUMN monitor_all INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workflows ADD COLUMN sample_interval REAL NOT NULL DEFAULT 1;
    """,
    # 9: how the workflow's workers in allocations wait (Torc's compute_node_* settings, JSON)
    """
    ALTER TABLE workflows ADD COLUMN compute_node TEXT;
    """,
    # 10: what a workflow says about itself (user, project, metadata), JSON
    """
    ALTER TABLE workflows ADD COLUMN about TEXT;
    """,
    # 11: jobs that run whatever became of their dependencies (Torc's cancel_on_blocking_job_failure: false)
    """
    ALTER TABLE jobs ADD COLUMN cancel_on_blocking INTEGER NOT NULL DEFAULT 1;
    """,
    # 12: files as dependencies: each file, the job that writes it, the jobs that read it, and
    # the paths a job must have written when it exits 0 (JSON); user data (JSON values jobs
    # read and write, with the value the spec gave, for a reset); actions (armed, due, running,
    # done or failed) and the jobs each one watches; a workflow holds its jobs back (held) until
    # its on_workflow_start actions have run; the order ready jobs are claimed in (its id, or
    # for Torc's jobs_sort_method one of its workflow's ids, given in that order) and whether a
    # job past its runtime gets TERM first
    """
    ALTER TABLE jobs ADD COLUMN outputs TEXT;
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        producer INTEGER,
        UNIQUE (workflow_id, name)
    );
    CREATE TABLE file_readers (
        file_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL,
        PRIMARY KEY (file_id, job_id)
    ) WITHOUT ROWID;
    CREATE TABLE user_data (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        initial TEXT NOT NULL,
        is_ephemeral INTEGER NOT NULL DEFAULT 0,
        producer INTEGER,
        updated REAL NOT NULL,
        UNIQUE (workflow_id, name)
    );
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'armed',
        run_id INTEGER,
        message TEXT
    );
    CREATE INDEX actions_by_state ON actions (workflow_id, state);
    ALTER TABLE workflows ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN claim_order INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET claim_order = id;
    ALTER TABLE jobs ADD COLUMN supports_termination INTEGER NOT NULL DEFAULT 1;
    DROP INDEX jobs_by_status;
    CREATE INDEX jobs_by_status ON jobs (status, claim_order, id);
    CREATE TABLE action_jobs (
        action_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL,
        PRIMARY KEY (action_id, job_id)
    ) WITHOUT ROWID;
    """,
    # a request's result answers only a repeat of the same request: its method and params hash
    """
    ALTER TABLE requests ADD COLUMN method TEXT;
    ALTER TABLE requests ADD COLUMN params_hash TEXT;
    """,
    # 14: each job's name template (the spec's parameterized name, or for a job listed without
    # parameters its name with each run of digits as `{n}`; `name_template` is the Python
    # function the migrating connection registers), for filtering and for the workflow's graph;
    # indexes for pages of a workflow's jobs in id or template order (name and status have
    # theirs). Neither holds a column a status change writes.
    """
    ALTER TABLE jobs ADD COLUMN template TEXT NOT NULL DEFAULT '';
    UPDATE jobs SET template = name_template(name);
    CREATE INDEX jobs_by_template ON jobs (workflow_id, template);
    CREATE INDEX jobs_by_workflow ON jobs (workflow_id);
    """,
    # 15: resource_monitor.generate_plots: the workflow's end writes resource plots
    "ALTER TABLE workflows ADD COLUMN generate_plots INTEGER NOT NULL DEFAULT 0;",
    # 16: deleted workflows whose jobs, attempts and events are still being deleted, in batches
    "CREATE TABLE purges (workflow_id INTEGER PRIMARY KEY);",
    # 17: a worker's poll finds its running jobs by (worker, status), not among every job it ran
    """
    CREATE INDEX jobs_by_worker_status ON jobs (worker_id, status) WHERE worker_id IS NOT NULL;
    DROP INDEX jobs_by_worker;
    """,
    # 18: which jobs read each user data entry, so that `reinitialize` reruns those that read
    # an entry written after they ran (workflows made before this have none recorded); a job's
    # label (Torc's): only a `run --label` of that label has its jobs claimed; the workflow's
    # execution_config (Torc's): the signal and grace at a job's runtime limit, and the exit codes
    # recorded for a job stopped for its time or memory
    """
    CREATE TABLE data_readers (
        data_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL,
        PRIMARY KEY (data_id, job_id)
    ) WITHOUT ROWID;
    ALTER TABLE jobs ADD COLUMN label TEXT;
    CREATE INDEX jobs_ready_unlabelled ON jobs (status, claim_order, id) WHERE label IS NULL;
    CREATE INDEX jobs_by_label ON jobs (workflow_id, label, status, claim_order) WHERE label IS NOT NULL;
    ALTER TABLE workflows ADD COLUMN term_signal INTEGER;
    ALTER TABLE workflows ADD COLUMN term_grace REAL;
    ALTER TABLE workflows ADD COLUMN timeout_exit_code INTEGER;
    ALTER TABLE workflows ADD COLUMN oom_exit_code INTEGER;
    """,
    # 19: what a workflow's jobs add (Torc's spawn_jobs) is read with (its cap, env and resource
    # requirements; workflows made before this have none), the lineage that added a job, and each
    # lineage's iterations
    """
    ALTER TABLE workflows ADD COLUMN spawning TEXT;
    ALTER TABLE jobs ADD COLUMN lineage TEXT;
    CREATE TABLE lineages (
        workflow_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        iterations INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, name)
    ) WITHOUT ROWID;
    """,
    # 20: Torc's stdio per job (NULL: separate; delete_stdio: deleted when it completes), and
    # whether memory limits are enforced (execution_config.limit_resources)
    """
    ALTER TABLE jobs ADD COLUMN stdio TEXT;
    ALTER TABLE jobs ADD COLUMN delete_stdio INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workflows ADD COLUMN limit_resources INTEGER NOT NULL DEFAULT 1;
    """,
    # 21: jobs as srun steps of their allocations (Torc's mode: slurm): the srun options; NULL: direct
    """
    ALTER TABLE workflows ADD COLUMN srun TEXT;
    """,
    # 22: Torc's datasets (directories jobs write, several may, and read), and who writes or reads each
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        workflow_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        hash_mode TEXT NOT NULL,
        description TEXT NOT NULL,
        UNIQUE (workflow_id, name)
    );
    CREATE TABLE dataset_jobs (
        dataset_id INTEGER NOT NULL,
        job_id INTEGER NOT NULL,
        writes INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, writes, job_id)
    ) WITHOUT ROWID;
    """,
]
