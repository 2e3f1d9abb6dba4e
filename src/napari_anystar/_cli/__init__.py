"""Sub-commands of the ``anystar`` CLI, one module each."""
