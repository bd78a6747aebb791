#!/usr/bin/env python3
"""Validates an OpenAPI document with openapi-spec-validator.

    grpc_library_openapi.py FILE

Prints ONE JSON line: {"valid": true} or {"valid": false, "error": "..."}.
"""

import json
import sys

from openapi_spec_validator import validate


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        document = json.load(f)
    try:
        validate(document)
    except Exception as err:  # the validator raises several error types
        print(json.dumps({"valid": False, "error": str(err)[:2000]}))
        return
    print(json.dumps({"valid": True}))


if __name__ == "__main__":
    main()
