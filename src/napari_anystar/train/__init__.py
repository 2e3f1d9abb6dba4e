"""Training and fine-tuning: configurations, data pools, training loops."""
