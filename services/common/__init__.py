"""What every service shares: bootstrap, config from env, JSON logs, metrics, errors, media constants, the port
table, provider names and provider plumbing (scrubbing, Retry-After), a bounded LRU map."""
