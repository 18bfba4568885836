"""gRPC streaming through meridian-proxy: a bidirectional stream and its
trailers must pass intact. Started by tests/tests/proxy_grpc.rs.

usage: grpc_stream_through_proxy.py MERIDIAN_BIN SERVER_ADDR PROXY_ADDR
"""

import json
import subprocess
import sys
import time
from concurrent import futures

import grpc

SERVICE = "meridian.test.Echo"


def chat(requests, context):
    context.set_trailing_metadata((("x-served-by", "python-upstream"),))
    for i, message in enumerate(requests):
        yield b"echo-%d:" % i + message


def main():
    meridian, server, proxy = sys.argv[1], sys.argv[2], sys.argv[3]
    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.stream_stream_rpc_method_handler(chat)
    upstream.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Chat": handler}),))
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    manifest = (
        "kind: Endpoints\nmetadata: {name: chat, namespace: shop, cluster: east}\n"
        f"spec: {{endpoints: [{{address: 127.0.0.1, port: {port}}}]}}\n"
    )
    run = subprocess.run([meridian, "--insecure", "--server", server, "apply", "-f", "-"],
                         input=manifest, capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise SystemExit(f"apply failed: {run.stderr}")

    channel = grpc.insecure_channel(proxy, options=(("grpc.default_authority", "chat.shop"),))
    stub = channel.stream_stream(f"/{SERVICE}/Chat")
    messages = [b"alpha", b"beta", b"gamma"]
    deadline = time.monotonic() + 30
    while True:
        try:
            call = stub(iter(messages), timeout=5)
            replies = list(call)
            trailers = dict(call.trailing_metadata() or ())
            break
        except grpc.RpcError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"no stream through the proxy: {e.code()} {e.details()}")
            time.sleep(0.2)
    expected = [b"echo-%d:" % i + m for i, m in enumerate(messages)]
    if replies != expected:
        raise SystemExit(f"stream mangled: {replies!r}")
    if trailers.get("x-served-by") != "python-upstream":
        raise SystemExit(f"trailers lost: {trailers!r}")
    print(json.dumps({"replies": len(replies), "trailers": trailers}))
    upstream.stop(0)


if __name__ == "__main__":
    main()
