"""The errors a user can cause and fix (bad params, unavailable weights, missing or corrupt inputs).

Entry points (stage scripts, the seed CLI) print these as one ``error: ...`` line and exit with
status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from attendome.core.io import CorruptDataError, DataError, DiskFullError, MissingDataError
from attendome.core.cache import ModelUnavailableError
from attendome.core.params import ParamsError

__all__ = ["EXPECTED_ERRORS", "ParamsError", "ModelUnavailableError", "DataError", "MissingDataError",
           "CorruptDataError", "DiskFullError"]

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ParamsError, ModelUnavailableError, DataError)
