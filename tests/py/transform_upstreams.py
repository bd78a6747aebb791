"""Upstreams for the edge's body transformation tests, on one port.

An XML service:
  GET  /orders/7         an order in XML (attributes, repeated items, a
                         namespaced element, an entity, CDATA, an empty one)
  GET  /orders/single    an order with one item
  POST /orders           records the XML it received, answers 201 + XML
  GET  /orders/malformed XML that is not well-formed
  GET  /orders/doctype   a "billion laughs" document (DOCTYPE + entities)
  GET  /orders/big       a 200 KB XML document
  GET  /orders/html      a 503 HTML page
A JSON service:
  GET  /users/1          a JSON document to reshape
  POST /echo-json        records the JSON it received and answers it back
SOAP endpoints (operation GetQuote, namespace http://example.test/stock):
  POST /soap11  requires Content-Type text/xml and
                SOAPAction "http://example.test/GetQuote"
  POST /soap12  requires Content-Type application/soap+xml with
                action="http://example.test/GetQuote"
  symbol FAULT: a Client / Sender fault; CRASH: a Server / Receiver fault;
  no symbol: a Client / Sender fault; else a GetQuoteResponse.
  A wrong Content-Type or action: 415 / 400 in plain text.
GET /last: the last request recorded (method, path, headers, body, and the
XML body parsed: tag, attributes, text, children).

Prints `{"listening": "127.0.0.1:PORT"}` first.
"""

import json
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOCK = "http://example.test/stock"
ACTION = "http://example.test/GetQuote"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"

ORDER = """<?xml version="1.0" encoding="UTF-8"?>
<order id="7" xmlns:x="urn:example:x">
  <customer>Ada &amp; Co</customer>
  <x:status>shipped</x:status>
  <item sku="a1"><name>Pen</name><qty>2</qty></item>
  <item sku="b2"><name>Ink</name><qty>1</qty></item>
  <note><![CDATA[handle <with> care]]></note>
  <gift/>
</order>"""

SINGLE = """<order id="9"><item sku="c3"><name>Pad</name></item></order>"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<lolz>&lol2;</lolz>"""

USER = {
    "userName": "ada",
    "data": {"items": [{"id": 1, "secret": "x"}, {"id": 2, "secret": "y"}],
             "internal_id": 5},
}

lock = threading.Lock()
last = {}


def tree(element):
    return {
        "tag": element.tag,
        "attrib": dict(element.attrib),
        "text": element.text,
        "children": [tree(child) for child in element],
    }


def soap11_envelope(body):
    return (f'<?xml version="1.0"?><soap:Envelope xmlns:soap="{SOAP11}">'
            f"<soap:Body>{body}</soap:Body></soap:Envelope>")


def soap12_envelope(body):
    return (f'<?xml version="1.0"?><env:Envelope xmlns:env="{SOAP12}">'
            f"<env:Body>{body}</env:Body></env:Envelope>")


def quote(symbol, prefix):
    return (f'<m:GetQuoteResponse xmlns:m="{STOCK}"><m:Price>34.5</m:Price>'
            f"<m:Symbol>{symbol}</m:Symbol></m:GetQuoteResponse>")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, content_type, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "xml": None,
        }
        try:
            entry["xml"] = tree(ET.fromstring(body)) if body else None
        except ET.ParseError as err:
            entry["xml_error"] = str(err)
        with lock:
            last.clear()
            last.update(entry)
        return entry

    def do_GET(self):
        if self.path == "/last":
            with lock:
                return self.send(200, "application/json", json.dumps(last))
        if self.path == "/orders/7":
            return self.send(200, "application/xml; charset=utf-8", ORDER)
        if self.path == "/orders/single":
            return self.send(200, "text/xml", SINGLE)
        if self.path == "/orders/malformed":
            return self.send(200, "application/xml", "<order><id>1</order>")
        if self.path == "/orders/doctype":
            return self.send(200, "application/xml", LAUGHS)
        if self.path == "/orders/big":
            items = "".join(f"<item>{i:08}</item>" for i in range(10000))
            return self.send(200, "application/xml", f"<order>{items}</order>")
        if self.path == "/orders/html":
            return self.send(503, "text/html", "<html>down for maintenance</html>")
        if self.path == "/users/1":
            return self.send(200, "application/json", json.dumps(USER))
        self.send(404, "text/plain", "not found")

    def do_POST(self):
        entry = self.record()
        if self.path == "/orders":
            return self.send(201, "application/xml",
                             "<created><id>8</id><status>new</status></created>")
        if self.path == "/echo-json":
            return self.send(200, "application/json", entry["body"] or "null")
        if self.path == "/soap11":
            return self.soap11(entry)
        if self.path == "/soap12":
            return self.soap12(entry)
        self.send(404, "text/plain", "not found")

    def symbol(self, entry, namespace):
        root = ET.fromstring(entry["body"])
        body = root.find(f"{{{namespace}}}Body")
        operation = body.find(f"{{{STOCK}}}GetQuote")
        if operation is None:
            return None, "no GetQuote operation"
        symbol = operation.find("symbol")
        return (symbol.text if symbol is not None else ""), None

    def soap11(self, entry):
        if not entry["headers"].get("content-type", "").startswith("text/xml"):
            return self.send(415, "text/plain", "SOAP 1.1 wants text/xml")
        if entry["headers"].get("soapaction") != f'"{ACTION}"':
            return self.send(400, "text/plain", "wrong SOAPAction")
        symbol, error = self.symbol(entry, SOAP11)
        if error:
            return self.send(400, "text/plain", error)
        if symbol in ("", "FAULT"):
            fault = ("<soap:Fault><faultcode>soap:Client</faultcode>"
                     "<faultstring>Unknown symbol</faultstring>"
                     f"<detail><symbol>{symbol}</symbol></detail></soap:Fault>")
            return self.send(500, "text/xml; charset=utf-8", soap11_envelope(fault))
        if symbol == "CRASH":
            fault = ("<soap:Fault><faultcode>soap:Server</faultcode>"
                     "<faultstring>Quote backend is down</faultstring></soap:Fault>")
            return self.send(500, "text/xml; charset=utf-8", soap11_envelope(fault))
        self.send(200, "text/xml; charset=utf-8", soap11_envelope(quote(symbol, "soap")))

    def soap12(self, entry):
        content_type = entry["headers"].get("content-type", "")
        if not content_type.startswith("application/soap+xml"):
            return self.send(415, "text/plain", "SOAP 1.2 wants application/soap+xml")
        if f'action="{ACTION}"' not in content_type:
            return self.send(400, "text/plain", "wrong action parameter")
        symbol, error = self.symbol(entry, SOAP12)
        if error:
            return self.send(400, "text/plain", error)
        if symbol in ("", "FAULT", None):
            code, reason, status = "env:Sender", "Unknown symbol", 400
        elif symbol == "CRASH":
            code, reason, status = "env:Receiver", "Quote backend is down", 500
        else:
            return self.send(200, "application/soap+xml; charset=utf-8",
                             soap12_envelope(quote(symbol, "env")))
        fault = (f"<env:Fault><env:Code><env:Value>{code}</env:Value></env:Code>"
                 f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason>'
                 f"<env:Detail><symbol>{symbol}</symbol></env:Detail></env:Fault>")
        self.send(status, "application/soap+xml; charset=utf-8", soap12_envelope(fault))


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(json.dumps({"listening": f"127.0.0.1:{server.server_address[1]}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
