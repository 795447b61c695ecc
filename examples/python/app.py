#!/usr/bin/env python3
"""pyservice: a slow-starting Python ML service, prewarm's example of an app worth checkpointing.

At start it imports numpy, scipy, pandas and scikit-learn, builds a synthetic data set and fits
a gradient-boosting model; only then does it listen (about 5 s on a 2-core machine, most of it
the fit). A restored copy skips all of that.

    GET /healthz  200 "ok"
    GET /predict  the model's prediction for a fixed sample, as JSON
                  {"prediction", "count", "hostname", "pid"}; each call increments the count
    GET /count    {"count": N}

Environment: PORT (default 8080); TRAIN_ESTIMATORS (default 200) sets the fit's size, and with it
the start-up time. Run single-threaded BLAS (OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1), as the
spec does: the process then has one thread, one listening socket, and no connection open between
requests, which is what a clean checkpoint wants.
"""
import time

_started = time.monotonic()

import json
import os
import signal
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import scipy
import scipy.stats
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier

PORT = int(os.environ.get("PORT", "8080"))
ESTIMATORS = int(os.environ.get("TRAIN_ESTIMATORS", "200"))


def train():
    X, y = make_classification(n_samples=5000, n_features=20, n_informative=10, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    # A touch of scipy/pandas preprocessing, as a real service would do.
    features = frame.drop(columns="label")
    features = (features - features.mean()) / features.std()
    model = GradientBoostingClassifier(n_estimators=ESTIMATORS, random_state=0)
    model.fit(features.to_numpy(), frame["label"].to_numpy())
    sample = scipy.stats.zscore(X, axis=0)[:1]
    return model, np.ascontiguousarray(sample)


model, sample = train()
count = 0


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, closed after the response.
    protocol_version = "HTTP/1.0"
    # A client that does not send its request within this time is dropped.
    timeout = 2

    def _send(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global count
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, "ok\n", "text/plain")
        elif path == "/predict":
            prediction = int(model.predict(sample)[0])
            count += 1
            self._send(200, json.dumps({
                "prediction": prediction,
                "count": count,
                "hostname": socket.gethostname(),  # per request: restored copies get new ones
                "pid": os.getpid(),
            }) + "\n")
        elif path == "/count":
            self._send(200, json.dumps({"count": count}) + "\n")
        else:
            self._send(404, json.dumps({"error": "not found"}) + "\n")

    def log_message(self, format, *args):
        pass  # no per-request output: nobody may be reading the container's stdout


class Server(HTTPServer):
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many probes or clients arrive
    # at once (a restored copy is probed right away), and a dropped SYN costs a 1 s retransmit.
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that can stall for seconds
        # in a container without a resolver. Nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]


def main():
    # As PID 1 of a container, SIGTERM is ignored unless handled.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server(("0.0.0.0", PORT), Handler)
    print(f"ready in {time.monotonic() - _started:.2f} s (listening on :{PORT}; numpy "
          f"{np.__version__}, scipy {scipy.__version__}, pandas {pd.__version__}, "
          f"scikit-learn {sklearn.__version__}, {ESTIMATORS} estimators)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
