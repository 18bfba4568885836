"""Proxyless gRPC (Python grpcio) against Meridian's ADS stream.

Started by tests/tests/grpc_interop.rs with GRPC_XDS_BOOTSTRAP pointing at a
control-plane node. Starts real gRPC test servers on 127.0.0.1, registers them
with `meridian apply`, dials xds:///NAME.NAMESPACE targets and checks that
calls follow a TrafficSplit's weights and fail over to the next priority
when the first priority's endpoints are marked unhealthy, and, with no
retry or outlier settings on the service, when they die (their servers
stop): no call fails. Prints one JSON summary line; exits non-zero with the
reason on failure.

usage: grpc_xds_client.py MERIDIAN_BIN SERVER_ADDR
"""

import json
import subprocess
import sys
import time
from collections import Counter
from concurrent import futures

import grpc

SERVICE = "meridian.test.Echo"
METHOD = f"/{SERVICE}/Who"
DEADLINE_S = 30.0


def serve(name):
    """A gRPC server that answers every call with its own name."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Who": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def apply(meridian, server, manifest):
    run = subprocess.run(
        [meridian, "--insecure", "--server", server, "apply", "-f", "-"],
        input=manifest, capture_output=True, text=True, timeout=60,
    )
    if run.returncode != 0:
        raise SystemExit(f"meridian apply failed: {run.stderr.strip()}")


def endpoints(service, cluster, zone, ports, health="healthy"):
    items = ", ".join(
        f"{{address: 127.0.0.1, port: {p}, zone: {zone}, health: {health}}}" for p in ports
    )
    return (
        f"kind: Endpoints\nmetadata: {{name: {service}, namespace: shop, cluster: {cluster}}}\n"
        f"spec: {{endpoints: [{items}]}}\n---\n"
    )


def call(stub):
    return stub(b"", timeout=5).decode()


def until(what, predicate):
    """Polls predicate() until it returns something truthy, or fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except grpc.RpcError as e:
            last_error = f"{e.code()}: {e.details()}"
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what} (last error: {last_error})")


def main():
    meridian, server = sys.argv[1], sys.argv[2]
    servers = {name: serve(name) for name in ["east-1", "east-2", "west-1", "v1", "v2"]}
    port = {name: p for name, (_, p) in servers.items()}

    mesh = (
        "kind: Cluster\nmetadata: {name: us-east-1a}\nspec: {region: us-east-1, zone: us-east-1a}\n---\n"
        "kind: Cluster\nmetadata: {name: us-west-2a}\nspec: {region: us-west-2, zone: us-west-2a}\n---\n"
    )
    for name in ["checkout", "split", "checkout-v1", "checkout-v2"]:
        mesh += f"kind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{protocol: grpc, port: 50051}}\n---\n"
    mesh += endpoints("checkout", "us-east-1a", "us-east-1a", [port["east-1"], port["east-2"]])
    mesh += endpoints("checkout", "us-west-2a", "us-west-2a", [port["west-1"]])
    mesh += endpoints("checkout-v1", "us-east-1a", "us-east-1a", [port["v1"]])
    mesh += endpoints("checkout-v2", "us-east-1a", "us-east-1a", [port["v2"]])
    mesh += (
        "kind: TrafficSplit\nmetadata: {name: split, namespace: shop}\n"
        "spec: {service: shop/split, backends: [{service: checkout-v1, weight: 1}, {service: checkout-v2, weight: 3}]}\n---\n"
        "kind: FailoverPolicy\nmetadata: {name: checkout, namespace: shop}\n"
        "spec: {service: shop/checkout, order: [us-east-1a, us-west-2a]}\n"
    )
    apply(meridian, server, mesh)

    checkout = grpc.insecure_channel("xds:///checkout.shop").unary_unary(METHOD)
    local = Counter(until("checkout.shop to answer", lambda: [call(checkout) for _ in range(40)]))
    if set(local) != {"east-1", "east-2"}:
        raise SystemExit(f"priority 0 (us-east-1a) should take all calls, got {dict(local)}")

    apply(meridian, server, endpoints("checkout", "us-east-1a", "us-east-1a",
                                      [port["east-1"], port["east-2"]], health="unhealthy"))
    until("failover to us-west-2a", lambda: call(checkout) == "west-1")
    failed_over = Counter(call(checkout) for _ in range(40))
    if set(failed_over) != {"west-1"}:
        raise SystemExit(f"after failover every call should reach west-1, got {dict(failed_over)}")

    apply(meridian, server, endpoints("checkout", "us-east-1a", "us-east-1a", [port["east-1"], port["east-2"]]))
    until("traffic to return to us-east-1a", lambda: call(checkout).startswith("east-"))

    split = grpc.insecure_channel("xds:///split.shop").unary_unary(METHOD)
    until("split.shop to answer", lambda: call(split))
    calls = 800
    shares = Counter(call(split) for _ in range(calls))
    v2_share = shares["v2"] / calls
    if set(shares) - {"v1", "v2"} or not 0.68 <= v2_share <= 0.82:
        raise SystemExit(f"split 1:3 should give v2 75% (+/- 7%), got {dict(shares)}")

    # The local endpoints die with nothing told to the control plane: the
    # client moves to the next priority and the route's default retry policy
    # (for gRPC services two retries on UNAVAILABLE and CANCELLED, the
    # statuses a dead or dying server gives) covers the calls caught in between.
    until("checkout.shop in us-east-1a", lambda: call(checkout).startswith("east-"))
    for name in ["east-1", "east-2"]:
        servers[name][0].stop(0)
    died = Counter()
    for _ in range(40):
        try:
            died[call(checkout)] += 1
        except grpc.RpcError as e:
            died[f"failed: {e.code()}"] += 1
    if set(died) != {"west-1"}:
        raise SystemExit(f"with us-east-1a dead every call should reach west-1, got {dict(died)}")

    print(json.dumps({
        "priority0": dict(local),
        "failover": dict(failed_over),
        "split": dict(shares),
        "v2_share": round(v2_share, 3),
        "dead_priority0": dict(died),
    }))
    for s, _ in servers.values():
        s.stop(0)  # stopping a stopped server is harmless


if __name__ == "__main__":
    main()
