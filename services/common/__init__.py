"""What every service shares: bootstrap, config from env, JSON logs, metrics, errors, media constants."""
