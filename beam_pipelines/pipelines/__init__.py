"""The packaged pipelines: one spec file each (``<name>.yaml``), their contracts under
``schemas/`` and their expectations beside them. ``--pipeline=<name>`` runs one."""
