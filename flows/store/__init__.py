"""The config store: its database and migrations, connectors and their merged configs, run records."""
