"""The run configuration: the settings (schema) and how they are read (YAML files, KEY=VALUE overrides) and shown."""
