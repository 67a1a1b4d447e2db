"""Which installed files a plugin came from: the sha256 of its distribution's RECORD.

pip writes RECORD into a distribution's ``.dist-info`` folder at install time, listing every file
it installed with that file's own sha256. Its digest therefore names the exact files installed:
two installs that both claim version 1.4.2 but ship different code have different digests, which a
version string cannot show (PyPI's lightning 2.6.2/2.6.3 were such a case). Nothing here verifies
the listed files; the digest only records what was there, for comparison later.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

#: The digest recorded for a plugin with no RECORD to hash: one passed in-process, or one whose
#: distribution is an ``.egg-info`` folder (``setup.py develop``, or a source tree's own egg-info
#: found first because the tree is on ``sys.path``).
NO_RECORD = "none"


def record_sha256(distribution: metadata.Distribution | None) -> str:
    """sha256 of the bytes of ``distribution``'s installed RECORD file, or :data:`NO_RECORD`.

    The bytes, not ``read_text("RECORD")``: pip writes RECORD with CRLF line ends, which text
    mode turns into LF, so only the bytes match ``sha256sum <dist-info>/RECORD``. RECORD lists
    itself, which is how its path is found without touching importlib's private attributes.
    """
    if distribution is None:
        return NO_RECORD
    for path in distribution.files or ():
        if path.name == "RECORD" and path.parent.name.endswith(".dist-info"):
            try:
                return hashlib.sha256(path.read_binary()).hexdigest()
            except OSError:
                return NO_RECORD
    return NO_RECORD
