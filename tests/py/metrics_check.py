"""Scrapes a proxy's /metrics and parses it with the Python Prometheus
client: the classic text parser (what most tools run) and the strict
OpenMetrics parser (the format the proxy declares). Either failing to
parse is an error. Prints one JSON line:

  {"families": {name: type}, "samples": [[name, {labels}, value], ...]}

from the OpenMetrics parse (counter samples keep their `_total` name), or
{"error": "..."}.

Usage: metrics_check.py ADMIN_ADDR
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    admin = sys.argv[1]
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
            content_type = response.headers.get("content-type", "")
            text = response.read().decode("utf-8")
    except OSError as err:
        print(json.dumps({"error": f"scrape failed: {err}"}))
        return
    try:
        # Both parsers are lazy: list() makes them read everything.
        classic = list(text_string_to_metric_families(text))
        strict = list(openmetrics_families(text))
    except Exception as err:  # noqa: BLE001 - any parse failure is the answer
        print(json.dumps({"error": f"parse failed: {err!r}"}))
        return
    families = {family.name: family.type for family in strict}
    samples = [
        [sample.name, dict(sample.labels), sample.value]
        for family in strict
        for sample in family.samples
    ]
    print(
        json.dumps(
            {
                "content_type": content_type,
                "classic_families": len(classic),
                "families": families,
                "samples": samples,
            }
        )
    )


if __name__ == "__main__":
    main()
