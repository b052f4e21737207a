"""An intkey client built from the Sawtooth SDK's own client pieces (`sawtooth_signing`, the SDK's
protobufs) and Sawtooth's REST API, as the SDK's `intkey` CLI is (that CLI is not published as a
package). Runs on the Python that has sawtooth-sdk (scripts/install-tools.sh: .tools/sawtooth-py39).

    intkey_client.py --url http://127.0.0.1:8080 --key me.priv set a 5 --wait 30
    intkey_client.py --url ... inc a 3 --wait 30
    intkey_client.py --url ... show a
    intkey_client.py --url ... list

Prints the REST answers as JSON; exits 1 when a batch ends INVALID or a name is not found.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time

import cbor
import requests
from sawtooth_sdk.protobuf.batch_pb2 import Batch, BatchHeader, BatchList
from sawtooth_sdk.protobuf.transaction_pb2 import Transaction, TransactionHeader
from sawtooth_signing import CryptoFactory, create_context
from sawtooth_signing.secp256k1 import Secp256k1PrivateKey

PREFIX = hashlib.sha512(b"intkey").hexdigest()[:6]


def address(name):
    return PREFIX + hashlib.sha512(name.encode()).hexdigest()[-64:]


def signer_from(path):
    ctx = create_context("secp256k1")
    if os.path.exists(path):
        with open(path) as f:
            key = Secp256k1PrivateKey.from_hex(f.read().strip())
    else:
        key = ctx.new_random_private_key()
        with open(path, "w") as f:
            f.write(key.as_hex())
    return CryptoFactory(ctx).new_signer(key)


def batch_list(signer, verb, name, value):
    payload = cbor.dumps({"Verb": verb, "Name": name, "Value": value})
    pub = signer.get_public_key().as_hex()
    header = TransactionHeader(
        signer_public_key=pub,
        batcher_public_key=pub,
        family_name="intkey",
        family_version="1.0",
        inputs=[address(name)],
        outputs=[address(name)],
        dependencies=[],
        payload_sha512=hashlib.sha512(payload).hexdigest(),
        nonce=os.urandom(16).hex(),
    ).SerializeToString()
    txn = Transaction(header=header, header_signature=signer.sign(header), payload=payload)
    bheader = BatchHeader(signer_public_key=pub, transaction_ids=[txn.header_signature]).SerializeToString()
    batch = Batch(header=bheader, header_signature=signer.sign(bheader), transactions=[txn])
    return BatchList(batches=[batch])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="intkey.priv", help="private key file (created when absent)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for verb in ("set", "inc", "dec"):
        c = sub.add_parser(verb)
        c.add_argument("name")
        c.add_argument("value", type=int)
        c.add_argument("--wait", type=int, default=0)
    sub.add_parser("show").add_argument("name")
    sub.add_parser("list")
    a = p.parse_args()
    url = a.url.rstrip("/")
    if a.cmd in ("set", "inc", "dec"):
        blist = batch_list(signer_from(a.key), a.cmd, a.name, a.value)
        r = requests.post(
            url + "/batches", data=blist.SerializeToString(), headers={"Content-Type": "application/octet-stream"}
        )
        if r.status_code != 202:
            print(r.text)
            return 1
        link = r.json()["link"]
        deadline = time.time() + a.wait
        while True:
            left = max(0, int(deadline - time.time()))
            status = requests.get(link + f"&wait={left}").json()
            if status["data"][0]["status"] != "PENDING" or time.time() >= deadline:
                break
        print(json.dumps(status["data"][0]))
        return 1 if status["data"][0]["status"] == "INVALID" else 0
    if a.cmd == "show":
        r = requests.get(url + "/state/" + address(a.name))
        if r.status_code != 200:
            print(r.text)
            return 1
        print(json.dumps({a.name: cbor.loads(base64.b64decode(r.json()["data"]))[a.name]}))
        return 0
    r = requests.get(url + "/state", params={"address": PREFIX})
    names = {}
    for entry in r.json()["data"]:
        names.update(cbor.loads(base64.b64decode(entry["data"])))
    print(json.dumps(names, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
