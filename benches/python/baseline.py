#!/usr/bin/env python3
"""The alternative a user would write instead of the daemon: one pass over every endpoint
service with the official Huawei Cloud Python SDK and a thread pool, each pending
connection decided by cedarpy against the same policy directory and entities, one action
per connection, one JSON line per decision.

It decides exactly what `vpcep-approver run --once` decides (same principal, action,
resource and context, `on_no_match = "reject"`), so the drain bench can run both on the
same seed and compare wall time, CPU time and peak RSS:

    cargo bench --bench drain -- --python /path/to/venv/bin/python

The venv needs benches/python/requirements.txt; benches/python/run.sh makes one.

usage: baseline.py --endpoint URL --project-id ID --policies DIR --in-flight N --audit FILE
       (HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK in the environment)
"""

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import sys
import threading

import cedarpy
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvpcep.v1 import (AcceptOrRejectEndpointRequest,
                                    AcceptOrRejectEndpointRequestBody,
                                    ListEndpointServiceRequest,
                                    ListServiceConnectionsRequest, VpcepClient)

PAGE = 1000


def datetime_arg(value):
    if isinstance(value, datetime.datetime):
        value = value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"__extn": {"fn": "datetime", "arg": str(value).replace("+00:00", "Z")}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--project-id", required=True)
    p.add_argument("--region", default="cn-north-4")
    p.add_argument("--target", default="bench")
    p.add_argument("--policies", required=True)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--audit", required=True)
    a = p.parse_args()

    policies = "\n".join(open(f).read() for f in sorted(glob.glob(os.path.join(a.policies, "*.cedar"))))
    base = json.load(open(os.path.join(a.policies, "entities.json")))
    known = {(e["uid"]["type"], e["uid"]["id"]) for e in base}

    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 10)
    cfg.retry_times = 0
    client = (VpcepClient.new_builder()
              .with_credentials(BasicCredentials(os.environ["HUAWEICLOUD_SDK_AK"],
                                                 os.environ["HUAWEICLOUD_SDK_SK"], a.project_id))
              .with_endpoints([a.endpoint]).with_http_config(cfg).build())

    def list_all(service_id, status):
        out, offset = [], 0
        while True:
            r = client.list_service_connections(ListServiceConnectionsRequest(
                vpc_endpoint_service_id=service_id, status=status, limit=PAGE, offset=offset))
            out.extend(r.connections or [])
            offset += PAGE
            if offset >= (r.total_count or 0):
                return out

    services, offset = [], 0
    while True:
        r = client.list_endpoint_service(ListEndpointServiceRequest(limit=PAGE, offset=offset))
        services.extend(r.endpoint_services or [])
        offset += PAGE
        if offset >= (r.total_count or 0):
            break

    audit_lock = threading.Lock()
    audit = open(a.audit, "a")
    failures = []

    def decide_and_act(svc, conn, accepted, pending):
        now = datetime.datetime.now(datetime.timezone.utc)
        entities = list(base)
        if ("Vpcep::Account", conn.domain_id) not in known:
            entities.append({"uid": {"type": "Vpcep::Account", "id": conn.domain_id},
                             "attrs": {}, "parents": []})
        if ("Vpcep::EndpointService", svc.id) not in known:
            entities.append({"uid": {"type": "Vpcep::EndpointService", "id": svc.id},
                             "attrs": {"name": svc.service_name or "", "project_id": a.project_id,
                                       "region": a.region, "target": a.target},
                             "parents": []})
        request = {
            "principal": f'Vpcep::Account::"{conn.domain_id}"',
            "action": 'Vpcep::Action::"connect"',
            "resource": f'Vpcep::EndpointService::"{svc.id}"',
            "context": {
                "endpoint_id": conn.id,
                "description": conn.description or "",
                "marker_id": conn.marker_id or 0,
                "created_at": datetime_arg(conn.created_at),
                "now": datetime_arg(now),
                "accepted_from_domain": accepted.get(conn.domain_id, 0),
                "pending_from_domain": pending.get(conn.domain_id, 0),
            },
        }
        result = cedarpy.is_authorized(request, policies, entities)
        action = "receive" if result.allowed else "reject"
        with audit_lock:
            audit.write(json.dumps({"at": now.isoformat(), "service_id": svc.id,
                                    "endpoint_id": conn.id, "domain_id": conn.domain_id,
                                    "action": action,
                                    "reasons": list(result.diagnostics.reasons)}) + "\n")
            audit.flush()
        client.accept_or_reject_endpoint(AcceptOrRejectEndpointRequest(
            vpc_endpoint_service_id=svc.id,
            body=AcceptOrRejectEndpointRequestBody(action=action, endpoints=[conn.id])))

    with concurrent.futures.ThreadPoolExecutor(max_workers=a.in_flight) as pool:
        def per_service(svc):
            counts = {}
            for c in list_all(svc.id, "accepted"):
                counts[c.domain_id] = counts.get(c.domain_id, 0) + 1
            waiting = list_all(svc.id, "pendingAcceptance")
            pending = {}
            for c in waiting:
                pending[c.domain_id] = pending.get(c.domain_id, 0) + 1
            return [pool.submit(decide_and_act, svc, c, counts, pending) for c in waiting]

        listed = [pool.submit(per_service, s) for s in services]
        for f in listed:
            for g in f.result():
                try:
                    g.result()
                except Exception as e:  # noqa: BLE001 - reported, counted, exit 1
                    failures.append(e)
    audit.close()
    for e in failures[:5]:
        print(f"baseline.py: {e}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
