"""Names of devline's environment variables, without importing the settings model.

`devline --help` names every variable; building the pydantic model only to spell them
would cost the help a tenth of a second. `Settings.env_name` gives the same names.
"""

from __future__ import annotations

ENV_PREFIX = "DEVLINE_"


def env_name(field: str) -> str:
    """The environment variable that sets the settings field `field`."""
    return ENV_PREFIX + field.upper()
