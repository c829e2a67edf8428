"""Export JSON Schema documents of the normalized union, for consumers outside Python.

`python -m schemas.export` rewrites the checked-in files; a test fails when they are stale.
Money is a decimal *string* on the native JSON stream (msgspec's default Decimal encoding), and the
schema says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from schemas.events import Event

SCHEMA_DIR = Path(__file__).parent
DOCUMENTS = {"event.schema.json": Event}


def render(type_: object) -> str:
    schema = msgspec.json.schema(type_)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "mdgateway event", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    for filename, type_ in DOCUMENTS.items():
        (SCHEMA_DIR / filename).write_text(render(type_))
        print(f"wrote {SCHEMA_DIR / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
