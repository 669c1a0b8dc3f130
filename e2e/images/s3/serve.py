"""moto's S3 server on 0.0.0.0:$PORT (5000) with the buckets in $S3_BUCKETS made.

Credentials are not checked (any key pair works); everything lives in memory,
so a restarted pod starts empty. For tests only.
"""

from __future__ import annotations

import os
import time

import boto3
from moto.server import ThreadedMotoServer

port = int(os.environ.get("PORT", "5000"))
server = ThreadedMotoServer(ip_address="0.0.0.0", port=port)
server.start()
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
for bucket in filter(None, os.environ.get("S3_BUCKETS", "").split(",")):
    s3.create_bucket(Bucket=bucket)
print(f"S3 on :{port}, buckets: {os.environ.get('S3_BUCKETS', '')}", flush=True)
while True:
    time.sleep(3600)
