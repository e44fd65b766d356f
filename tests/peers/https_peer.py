#!/usr/bin/python3
"""An HTTPS server for MTA-STS policy files, for tests/mta_sts.rs.

    https_peer.py ROOT CERT KEY

Serves the files under ROOT (GET only; /.well-known/mta-sts.txt is the policy) on
127.0.0.1 on a free port with the certificate chain CERT and key KEY (PEM), and prints
"ready PORT" once it listens. /redirect answers 301 to the policy.
"""
import http.server
import ssl
import sys
from functools import partial


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/.well-known/mta-sts.txt" and self.server.redirect:
            self.send_response(301)
            self.send_header("Location", "https://example.invalid/")
            self.end_headers()
            return
        return super().do_GET()

    def log_message(self, *args):
        pass


root, cert, key = sys.argv[1:4]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
server.redirect = len(sys.argv) > 4 and sys.argv[4] == "--redirect"
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready %d" % server.server_address[1], flush=True)
server.serve_forever()
