"""Steady load for the fault drills: every answer is classified, none lost.

usage: fault_load.py URL SECONDS CONCURRENCY EXPECTED_BODY [--fresh]

Each worker sends GET URL in a loop for SECONDS (keep-alive, or a new
connection per request with --fresh) and sorts every attempt into:
  ok        200 with exactly EXPECTED_BODY ("\\n" escapes allowed);
  truncated 200 whose body ended early or differs (a false completion if it
            had looked complete: counted separately as "bad_body");
  status    an error status (counted per code, with x-mesh-error reasons);
  error     a visible transport failure (refused, reset, cut).
Prints one JSON object: counts, and the times (seconds since start) of the
first and last failure.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    url, seconds, concurrency, expected = sys.argv[1:5]
    fresh = "--fresh" in sys.argv[5:]
    expected = expected.encode().decode("unicode_escape").encode()
    target = urllib.parse.urlsplit(url)
    path = target.path + (f"?{target.query}" if target.query else "")
    deadline = time.monotonic() + float(seconds)
    start = time.monotonic()
    lock = threading.Lock()
    result = {
        "ok": 0,
        "bad_body": 0,
        "truncated": 0,
        "status": {},
        "reasons": {},
        "error": 0,
        "errors": {},
        "first_failure": None,
        "last_failure": None,
    }

    def failed(kind, detail=None):
        now = round(time.monotonic() - start, 3)
        with lock:
            if kind == "status":
                result["status"][detail[0]] = result["status"].get(detail[0], 0) + 1
                result["reasons"][detail[1]] = result["reasons"].get(detail[1], 0) + 1
            elif kind == "error":
                result["error"] += 1
                result["errors"][detail] = result["errors"].get(detail, 0) + 1
            else:
                result[kind] += 1
            if result["first_failure"] is None:
                result["first_failure"] = now
            result["last_failure"] = now

    def worker():
        conn = None
        while time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failed("status", (str(response.status), response.getheader("x-mesh-error", "-")))
                elif body == expected:
                    with lock:
                        result["ok"] += 1
                elif len(body) < len(expected):
                    failed("truncated")
                else:
                    failed("bad_body")
                if fresh or response.will_close:
                    conn.close()
                    conn = None
            except http.client.IncompleteRead:
                failed("error", "IncompleteRead")
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException) as err:
                failed("error", type(err).__name__)
                conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(int(concurrency))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
