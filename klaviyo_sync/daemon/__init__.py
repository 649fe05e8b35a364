"""The daemon stage: periodic jobs, signals, systemd notification, locks and health."""
