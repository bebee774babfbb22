#!/usr/bin/env python3
"""moto_server with DynamoDB's atomicity: one request handled at a time.

moto evaluates a condition expression and applies the write without a lock, so two
concurrent conditional updates of one item can both pass, which DynamoDB never allows (and
exactly-once code relies on). Python's GIL already runs moto's handlers one at a time for
throughput's sake, so serialising whole requests costs almost nothing and makes every
conditional write and transaction atomic, as they are on DynamoDB.

Usage: moto-server.py <host> <port>
"""
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class Serialised:
    """A WSGI app that lets one request at a time into `app`, body and all."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Drain the response inside the lock: moto builds it lazily in some paths.
            return list(self.app(environ, start_response))


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, Serialised(app), threaded=True)


if __name__ == "__main__":
    main()
