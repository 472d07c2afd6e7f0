"""The label database: subjects, image pairs and label pairs, safely stored.

SQLite by default (one file, WAL journal, every write one transaction), any
SQLAlchemy URL otherwise.  Imports neither torch nor Qt.

    >>> from napari_labelreg.database import LabelDB
    >>> db = LabelDB.open("labels.db")
"""

from .masks import decode_mask, encode_mask
from .schema import LABEL_TYPES, SCHEMA_VERSION, STATUSES
from .store import ConflictError, ImagePairRecord, LabelDB, LabelPairRecord, Revision, ValidationError

__all__ = [
    "LABEL_TYPES", "SCHEMA_VERSION", "STATUSES", "ConflictError", "ImagePairRecord", "LabelDB", "LabelPairRecord",
    "Revision", "ValidationError", "decode_mask", "encode_mask",
]
