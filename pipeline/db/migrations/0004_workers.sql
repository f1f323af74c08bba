-- Worker presence: each ASR worker upserts its row when it starts and on every
-- heartbeat, so operators see which workers are alive, what they run on, what
-- they are doing and (on CUDA) how much GPU memory they see.
CREATE TABLE workers (
    worker_id               text PRIMARY KEY,
    hostname                text NOT NULL,
    pid                     integer NOT NULL,
    device                  text NOT NULL,
    compute_type            text NOT NULL,
    model                   text NOT NULL,
    batch_size              integer NOT NULL,
    started_at              timestamptz NOT NULL DEFAULT now(),
    last_seen_at            timestamptz NOT NULL DEFAULT now(),
    stopped_at              timestamptz,
    current_job_id          bigint REFERENCES jobs (id) ON DELETE SET NULL,
    jobs_done               bigint NOT NULL DEFAULT 0,
    jobs_failed             bigint NOT NULL DEFAULT 0,
    gpu_memory_used_bytes   bigint,
    gpu_memory_total_bytes  bigint
);

CREATE INDEX workers_last_seen ON workers (last_seen_at DESC);
