#!/usr/bin/env python3
"""Prepares a moto server for the s3 backend tests: a bucket, and optionally real credentials.

Run by host/tests/common/daemons.rs as

    python3 moto_setup.py ENDPOINT BUCKET [--auth]

Creates BUCKET on the moto server at ENDPOINT (http://127.0.0.1:PORT). With --auth it also
creates an IAM user allowed s3:*, gives it an access key, and then turns on moto's request
authentication (POST /moto-api/reset-auth with 0 free requests): from then on moto checks
every request's SigV4 signature against that key and answers InvalidAccessKeyId or
SignatureDoesNotMatch otherwise. Prints {"access_key_id": ..., "secret_access_key": ...} as
JSON (placeholder keys without --auth, which moto then accepts unchecked).
"""

import json
import sys
import urllib.request

import boto3

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def main() -> None:
    endpoint, bucket = sys.argv[1], sys.argv[2]
    auth = "--auth" in sys.argv[3:]
    # Keys for the setup calls themselves, made before authentication is on.
    common = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    boto3.client("s3", **common).create_bucket(Bucket=bucket)
    keys = {"access_key_id": "AKIAPLACEHOLDER", "secret_access_key": "placeholder"}
    if auth:
        iam = boto3.client("iam", **common)
        iam.create_user(UserName="shoal")
        iam.put_user_policy(
            UserName="shoal", PolicyName="s3-all", PolicyDocument=json.dumps(POLICY)
        )
        key = iam.create_access_key(UserName="shoal")["AccessKey"]
        keys = {
            "access_key_id": key["AccessKeyId"],
            "secret_access_key": key["SecretAccessKey"],
        }
        # Not form-encoded: moto reads the raw body, which Flask leaves empty for forms.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=30).read()
    print(json.dumps(keys))


if __name__ == "__main__":
    main()
