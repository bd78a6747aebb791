"""Sends N concurrent GETs to one URL (threads released together) and
prints what came back: {"statuses": {code: n}, "x_cache": {value: n},
"bodies": distinct bodies}.

Usage: cache_burst.py URL N
"""

import http.client
import json
import sys
import threading
from urllib.parse import urlsplit


def main():
    url, count = sys.argv[1], int(sys.argv[2])
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    start = threading.Barrier(count)
    lock = threading.Lock()
    statuses, caches, bodies = {}, {}, set()

    def one():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        try:
            start.wait()
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                cache = response.getheader("x-cache", "none")
                caches[cache] = caches.get(cache, 0) + 1
                bodies.add(body)
        except Exception as err:  # reported, the test fails on the counts
            with lock:
                statuses[str(err)] = statuses.get(str(err), 0) + 1
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"statuses": statuses, "x_cache": caches, "bodies": len(bodies)}))


if __name__ == "__main__":
    main()
