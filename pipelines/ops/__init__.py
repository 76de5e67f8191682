"""Operations: alerts to people (webhook, e-mail) and metrics to machines (StatsD)."""
