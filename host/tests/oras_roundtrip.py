#!/usr/bin/env python3
"""Pushes the files of a directory as an OCI artifact with oras-py, then pulls it back.

Run by host/tests/clients.rs as

    python3 oras_roundtrip.py HOST:PORT WORKDIR

For each of WORKDIR/in-v1 and WORKDIR/in-chunked it pushes the directory's files to
HOST:PORT/test/artifact:<v1|chunked> and pulls them into WORKDIR/out-<v1|chunked>. `v1` uploads
each blob the way oras-py does by default (a POST, then one PUT with the whole blob and the
digest); `chunked` uses its chunked upload (a POST, a PATCH per 64 KiB with Content-Range, then
a PUT with the digest and no body). The Rust test compares the files; this script only fails
loudly when oras-py raises.
"""

import os
import sys

import oras.client

CHUNK_SIZE = 64 * 1024


def main() -> None:
    host, workdir = sys.argv[1], os.path.abspath(sys.argv[2])
    client = oras.client.OrasClient(hostname=host, insecure=True)
    for tag, chunked in (("v1", False), ("chunked", True)):
        source = os.path.join(workdir, f"in-{tag}")
        target = f"{host}/test/artifact:{tag}"
        # oras-py refuses paths outside the working directory unless told not to check.
        os.chdir(source)
        files = sorted(os.listdir(source))
        response = client.push(
            target=target, files=files, do_chunked=chunked, chunk_size=CHUNK_SIZE, quiet=True
        )
        print(
            f"pushed {target}: {response.status_code} "
            f"{response.headers.get('Docker-Content-Digest', '(no Docker-Content-Digest)')}"
        )
        pulled = client.pull(target=target, outdir=os.path.join(workdir, f"out-{tag}"))
        print(f"pulled {target}: {sorted(os.path.basename(p) for p in pulled)}")


if __name__ == "__main__":
    main()
