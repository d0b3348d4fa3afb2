#!/usr/bin/env python3
"""Conformance of the built-in simulator (`vpcep-approver simulate`, README "Simulator") with the
official Huawei Cloud Python SDK (huaweicloudsdkcore/-vpcep/-iam, pinned in
requirements.txt).

Every call goes through the SDK's own clients (VpcepClient with BasicCredentials and the
simulator as a custom endpoint, IamClient for the password token), so the simulator is
checked against the SDK's signer, request models, response models and error parsing.

Two modes:
  conformance.py write-seed FILE          write the seed the cases expect
  conformance.py run --endpoint URL ...   run the cases against a simulator started
                                          with that seed; prints one `ok NAME` or
                                          `FAILED NAME: why` line per case, then
                                          `N passed, N failed`; exit 1 on any failure

tests/sdk/run.sh does both and manages the simulator.
"""

import argparse
import datetime
import json
import sys
import time
import traceback

# ---------------------------------------------------------------------------
# Seed: three services; the first one holds every connection the cases act on.
# Creation times are distinct so the default order (creation time, newest first) is
# fully determined.
# ---------------------------------------------------------------------------

SVC_PAY = "4189d3c2-8882-4871-a3c2-d380272eed88"
SVC_LOGS = "7c1e2a55-0b7e-4d1f-9a51-3f0f6a0d2b10"
SVC_AUTO = "b2d4f6a8-1c3e-4a5b-8d7f-9e0a1b2c3d4e"

EP_ACCEPTED = "0a6f3c4e-0001-4d2a-9c1e-5b7d9f1a3c5e"  # accepted: receive → EndPoint.2014
EP_REJECTED = "0a6f3c4e-0002-4d2a-9c1e-5b7d9f1a3c5e"  # rejected
EP_ACCEPT_ME = "0a6f3c4e-0003-4d2a-9c1e-5b7d9f1a3c5e"  # pending → receive
EP_REJECT_ME = "0a6f3c4e-0004-4d2a-9c1e-5b7d9f1a3c5e"  # pending → reject
EP_BIG_MARKER = "0a6f3c4e-0005-4d2a-9c1e-5b7d9f1a3c5e"  # pending, marker_id > 2^53
EP_UNTOUCHED = "0a6f3c4e-0006-4d2a-9c1e-5b7d9f1a3c5e"  # pending; bad requests must not move it
EP_OTHER_SVC = "0a6f3c4e-0007-4d2a-9c1e-5b7d9f1a3c5e"  # pending, on SVC_LOGS
EP_UNKNOWN = "ffffffff-0000-4000-8000-000000000000"  # nowhere

# The action-response example value of the API reference: above 2^53 and above i32.
BIG_MARKER = 422321321312321321
assert BIG_MARKER > 2**53

DOMAIN_A = "6e9dfd51d1124e8d8498dce894923a0d"
DOMAIN_B = "0c8a2f3e4b5d6e7f8091a2b3c4d5e6f7"

CONNECTIONS_PAY = [  # oldest first
    dict(id=EP_ACCEPTED, domain_id=DOMAIN_A, description="old, accepted",
         marker_id=16777510, status="accepted", created_at="2026-11-20T10:00:00Z"),
    dict(id=EP_REJECTED, domain_id=DOMAIN_B, description="old, rejected",
         marker_id=16777511, status="rejected", created_at="2026-11-20T10:01:00Z"),
    dict(id=EP_ACCEPT_ME, domain_id=DOMAIN_A, description="CHG-1234",
         marker_id=16777512, status="pendingAcceptance", created_at="2026-11-20T10:02:00Z"),
    dict(id=EP_REJECT_ME, domain_id=DOMAIN_B, description="CHG-1235",
         marker_id=16777513, status="pendingAcceptance", created_at="2026-11-20T10:03:00Z"),
    dict(id=EP_BIG_MARKER, domain_id=DOMAIN_A, description="big marker",
         marker_id=BIG_MARKER, status="pendingAcceptance", created_at="2026-11-20T10:04:00Z"),
    dict(id=EP_UNTOUCHED, domain_id=DOMAIN_B, description="",
         marker_id=16777515, status="pendingAcceptance", created_at="2026-11-20T10:05:00Z"),
]

SERVICES = [  # oldest first
    dict(id=SVC_PAY, service_name="cn-north-4.payments." + SVC_PAY, approval_enabled=True,
         status="available", created_at="2026-11-01T00:00:01Z", connections=CONNECTIONS_PAY),
    dict(id=SVC_LOGS, service_name="cn-north-4.logs." + SVC_LOGS, approval_enabled=True,
         status="available", created_at="2026-11-01T00:00:02Z",
         connections=[dict(id=EP_OTHER_SVC, domain_id=DOMAIN_B, marker_id=16777600,
                           status="pendingAcceptance", created_at="2026-11-20T11:00:00Z")]),
    dict(id=SVC_AUTO, service_name="cn-north-4.auto." + SVC_AUTO, approval_enabled=False,
         status="available", created_at="2026-11-01T00:00:03Z", connections=[]),
]

PENDING_PAY = {EP_ACCEPT_ME, EP_REJECT_ME, EP_BIG_MARKER, EP_UNTOUCHED}


def write_seed(path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"services": SERVICES}, f, indent=1)


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------

class CaseFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CaseFailure(what)


def eq(actual, expected, what):
    if actual != expected:
        raise CaseFailure(f"{what}: expected {expected!r}, got {actual!r}")


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def expect_error(call, status, codes, what):
    """Runs `call`, which must raise the SDK's ClientRequestException with this HTTP
    status and one of `codes`, and carry a request id. Returns the exception."""
    from huaweicloudsdkcore.exceptions import exceptions
    try:
        resp = call()
    except exceptions.ClientRequestException as e:
        eq(e.status_code, status, f"{what}: HTTP status")
        check(e.error_code in codes,
              f"{what}: error_code {e.error_code!r} not in {sorted(codes)} (msg {e.error_msg!r})")
        check(bool(e.request_id), f"{what}: no request id (X-Request-Id)")
        return e
    raise CaseFailure(f"{what}: expected HTTP {status} {sorted(codes)}, got success {resp}")


# ---------------------------------------------------------------------------
# Cases (run in this order: the list cases see the seed unchanged, the action cases
# change it)
# ---------------------------------------------------------------------------

class Ctx:
    def __init__(self, args):
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdkvpcep.v1 import VpcepClient
        self.args = args
        self.cfg = HttpConfig.get_default_config()
        self.cfg.timeout = (5, 10)
        self.cfg.retry_times = 0
        self.vpcep = self.vpcep_client(BasicCredentials(args.ak, args.sk, args.project_id))
        self.token = None  # set by the IAM case, used by the token case

    def vpcep_client(self, credentials):
        from huaweicloudsdkvpcep.v1 import VpcepClient
        return (VpcepClient.new_builder().with_credentials(credentials)
                .with_endpoints([self.args.endpoint]).with_http_config(self.cfg).build())

    def conns(self, service=SVC_PAY, **kw):
        from huaweicloudsdkvpcep.v1 import ListServiceConnectionsRequest
        return self.vpcep.list_service_connections(
            ListServiceConnectionsRequest(vpc_endpoint_service_id=service, **kw))

    def one(self, endpoint_id, service=SVC_PAY):
        r = self.conns(service, id=endpoint_id)
        eq(r.total_count, 1, f"read-back of {endpoint_id}: total_count")
        eq([c.id for c in r.connections], [endpoint_id], f"read-back of {endpoint_id}: ids")
        return r.connections[0]

    def act(self, action, endpoints, service=SVC_PAY):
        from huaweicloudsdkvpcep.v1 import (AcceptOrRejectEndpointRequest,
                                            AcceptOrRejectEndpointRequestBody)
        body = AcceptOrRejectEndpointRequestBody(action=action, endpoints=endpoints)
        return self.vpcep.accept_or_reject_endpoint(
            AcceptOrRejectEndpointRequest(vpc_endpoint_service_id=service, body=body))


@case
def list_services_paging(ctx):
    from huaweicloudsdkvpcep.v1 import ListEndpointServiceRequest
    p1 = ctx.vpcep.list_endpoint_service(ListEndpointServiceRequest(limit=2, offset=0))
    p2 = ctx.vpcep.list_endpoint_service(ListEndpointServiceRequest(limit=2, offset=2))
    p3 = ctx.vpcep.list_endpoint_service(ListEndpointServiceRequest(limit=2, offset=4))
    eq([p.total_count for p in (p1, p2, p3)], [3, 3, 3], "total_count ignores paging")
    # default order: creation time, newest first
    eq([s.id for s in p1.endpoint_services], [SVC_AUTO, SVC_LOGS], "page 1 (limit 2, offset 0)")
    eq([s.id for s in p2.endpoint_services], [SVC_PAY], "page 2 (limit 2, offset 2)")
    eq(p3.endpoint_services, [], "page past the end")
    svc = {s.id: s for s in p1.endpoint_services + p2.endpoint_services}
    eq(svc[SVC_PAY].service_name, "cn-north-4.payments." + SVC_PAY, "service_name")
    eq(svc[SVC_PAY].approval_enabled, True, "approval_enabled of the payments service")
    eq(svc[SVC_AUTO].approval_enabled, False, "approval_enabled of the auto service")
    eq(svc[SVC_PAY].status, "available", "service status")
    # accepted (and creating) connections only
    eq(svc[SVC_PAY].connection_count, 1, "connection_count")


@case
def list_connections_paging(ctx):
    newest_first = [c["id"] for c in reversed(CONNECTIONS_PAY)]
    p1 = ctx.conns(limit=4, offset=0)
    p2 = ctx.conns(limit=4, offset=4)
    p3 = ctx.conns(limit=4, offset=8)
    eq([p.total_count for p in (p1, p2, p3)], [6, 6, 6], "total_count ignores paging")
    eq([c.id for c in p1.connections] + [c.id for c in p2.connections], newest_first,
       "pages in creation order, newest first")
    eq(p3.connections, [], "page past the end")
    asc = ctx.conns(limit=2, offset=0, sort_dir="asc")
    eq([c.id for c in asc.connections], newest_first[::-1][:2], "sort_dir=asc")
    d = ctx.conns(limit=10)
    eq(len(d.connections), 6, "limit=10 returns all six")


@case
def list_connections_status_filter(ctx):
    r = ctx.conns(status="pendingAcceptance", limit=1000, offset=0)
    eq(r.total_count, 4, "pendingAcceptance total_count")
    eq({c.id for c in r.connections}, PENDING_PAY, "pendingAcceptance ids")
    check(all(c.status == "pendingAcceptance" for c in r.connections), "statuses in the page")
    r = ctx.conns(status="pendingAcceptance", limit=1, offset=1)
    eq(r.total_count, 4, "total_count with limit 1")
    eq(len(r.connections), 1, "page size with limit 1")
    r = ctx.conns(status="accepted", limit=1000)
    eq([c.id for c in r.connections], [EP_ACCEPTED], "accepted ids")
    r = ctx.conns(status="rejected", limit=1000)
    eq([c.id for c in r.connections], [EP_REJECTED], "rejected ids")


@case
def list_connections_id_filter(ctx):
    c = ctx.one(EP_ACCEPT_ME)
    want = CONNECTIONS_PAY[2]
    for field in ("domain_id", "description", "marker_id", "status", "created_at"):
        eq(getattr(c, field), want[field], field)
    r = ctx.conns(id=EP_OTHER_SVC)
    eq((r.total_count, r.connections), (0, []), "id of another service's endpoint")
    r = ctx.conns(id=EP_UNKNOWN)
    eq((r.total_count, r.connections), (0, []), "unknown id")


@case
def marker_id_above_2_53(ctx):
    c = ctx.one(EP_BIG_MARKER)
    check(isinstance(c.marker_id, int), f"marker_id is {type(c.marker_id).__name__}, not int")
    eq(c.marker_id, BIG_MARKER, "marker_id read back exactly")
    # the request model types marker_id as a string
    r = ctx.conns(marker_id=str(BIG_MARKER))
    eq([x.id for x in r.connections], [EP_BIG_MARKER], "marker_id filter")
    eq(r.total_count, 1, "marker_id filter total_count")
    eq(r.connections[0].marker_id, BIG_MARKER, "marker_id in the filtered list")


@case
def accept_pending(ctx):
    r = ctx.act("receive", [EP_ACCEPT_ME])
    eq([c.id for c in r.connections], [EP_ACCEPT_ME], "action response ids")
    eq(r.connections[0].status, "accepted", "status in the action response")
    c = ctx.one(EP_ACCEPT_ME)
    eq(c.status, "accepted", "status read back")
    eq(c.marker_id, CONNECTIONS_PAY[2]["marker_id"], "marker_id unchanged")


@case
def reject_pending(ctx):
    r = ctx.act("reject", [EP_REJECT_ME])
    eq([(c.id, c.status) for c in r.connections], [(EP_REJECT_ME, "rejected")],
       "action response")
    eq(ctx.one(EP_REJECT_ME).status, "rejected", "status read back")
    r = ctx.conns(status="pendingAcceptance", limit=1000)
    eq({c.id for c in r.connections}, {EP_BIG_MARKER, EP_UNTOUCHED}, "pending after both")


@case
def receive_already_accepted_is_2014(ctx):
    expect_error(lambda: ctx.act("receive", [EP_ACCEPTED]), 400, {"EndPoint.2014"},
                 "receive on an accepted connection")
    eq(ctx.one(EP_ACCEPTED).status, "accepted", "status unchanged")
    # the endpoint accepted by accept_pending answers the same way
    expect_error(lambda: ctx.act("receive", [EP_ACCEPT_ME]), 400, {"EndPoint.2014"},
                 "second receive")


@case
def reject_accepted(ctx):
    # documented use: terraform rejects endpoints removed from an approval set
    r = ctx.act("reject", [EP_ACCEPTED])
    eq([(c.id, c.status) for c in r.connections], [(EP_ACCEPTED, "rejected")], "action response")
    eq(ctx.one(EP_ACCEPTED).status, "rejected", "status read back")


@case
def invalid_action(ctx):
    for bad in ("accept", "Receive", "approve"):
        expect_error(lambda: ctx.act(bad, [EP_UNTOUCHED]), 400,
                     {"EndPoint.0007", "EndPoint.2027"}, f"action {bad!r}")
    eq(ctx.one(EP_UNTOUCHED).status, "pendingAcceptance", "status unchanged")


@case
def unknown_endpoint(ctx):
    # docs/design.md, "The API as the daemon uses it": 404 EndPoint.2006 "The endpoint does not exist."
    expect_error(lambda: ctx.act("receive", [EP_UNKNOWN]), 404, {"EndPoint.2006"},
                 "receive on an unknown endpoint")


@case
def unknown_service(ctx):
    # docs/design.md, "The API as the daemon uses it": 404 EndPoint.0005 for an unknown service/resource
    expect_error(lambda: ctx.conns(service=EP_UNKNOWN), 404, {"EndPoint.0005"},
                 "list connections of an unknown service")
    expect_error(lambda: ctx.act("receive", [EP_UNTOUCHED], service=EP_UNKNOWN), 404,
                 {"EndPoint.0005"}, "action on an unknown service")


@case
def more_than_one_endpoint_is_2031(ctx):
    expect_error(lambda: ctx.act("receive", [EP_UNTOUCHED, EP_BIG_MARKER]), 400,
                 {"EndPoint.2031"}, "two endpoints in one action")
    eq(ctx.one(EP_UNTOUCHED).status, "pendingAcceptance", "first endpoint unchanged")
    eq(ctx.one(EP_BIG_MARKER).status, "pendingAcceptance", "second endpoint unchanged")


@case
def wrong_secret_key_is_401(ctx):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkvpcep.v1 import ListEndpointServiceRequest
    bad = ctx.vpcep_client(BasicCredentials(ctx.args.ak, ctx.args.sk + "x", ctx.args.project_id))
    e = expect_error(lambda: bad.list_endpoint_service(ListEndpointServiceRequest()), 401,
                     {"APIGW.0301"}, "list services signed with a wrong SK")
    unknown_ak = ctx.vpcep_client(BasicCredentials("NOSUCHAK", ctx.args.sk, ctx.args.project_id))
    expect_error(lambda: unknown_ak.list_endpoint_service(ListEndpointServiceRequest()), 401,
                 {"APIGW.0301"}, "list services signed with an unknown AK")
    return f"request_id {e.request_id}"


@case
def iam_password_token(ctx):
    from huaweicloudsdkcore.auth.credentials import GlobalCredentials
    from huaweicloudsdkiam.v3 import (IamClient, KeystoneCreateUserTokenByPasswordRequest,
                                      KeystoneCreateUserTokenByPasswordRequestBody, PwdAuth,
                                      PwdIdentity, PwdPassword, PwdPasswordUser,
                                      PwdPasswordUserDomain, AuthScope, AuthScopeProject)
    a = ctx.args
    # domain_id is given so the SDK does not try to discover it from the real IAM
    iam = (IamClient.new_builder()
           .with_credentials(GlobalCredentials(a.ak, a.sk, "sim-domain-id"))
           .with_endpoints([a.endpoint]).with_http_config(ctx.cfg).build())

    def request(password):
        user = PwdPasswordUser(domain=PwdPasswordUserDomain(name=a.domain), name=a.user,
                               password=password)
        auth = PwdAuth(identity=PwdIdentity(methods=["password"],
                                            password=PwdPassword(user=user)),
                       scope=AuthScope(project=AuthScopeProject(id=a.project_id)))
        return iam.keystone_create_user_token_by_password(
            KeystoneCreateUserTokenByPasswordRequest(
                nocatalog="true", body=KeystoneCreateUserTokenByPasswordRequestBody(auth=auth)))

    r = request(a.password)
    eq(r.status_code, 201, "HTTP status")
    check(bool(r.x_subject_token), "no X-Subject-Token")
    eq(r.token.project.id, a.project_id, "token project id")
    expires = datetime.datetime.strptime(r.token.expires_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    left = expires.replace(tzinfo=datetime.timezone.utc) - datetime.datetime.now(
        datetime.timezone.utc)
    check(datetime.timedelta(hours=23) < left <= datetime.timedelta(hours=24, minutes=1),
          f"expires_at {r.token.expires_at} is not ~24 h ahead")
    ctx.token = r.x_subject_token
    from huaweicloudsdkcore.exceptions import exceptions
    try:
        request(a.password + "x")
        raise CaseFailure("wrong password: token issued")
    except exceptions.ClientRequestException as e:
        eq(e.status_code, 401, "wrong password: HTTP status")
    return f"token {len(ctx.token)} chars, expires_at {r.token.expires_at}"


@case
def token_usable_with_vpcep_client(ctx):
    # huaweicloudsdkcore 3.1.219 has no token credential (AK/SK only), so this swaps in a
    # BasicCredentials subclass that sends X-Auth-Token instead of a signature; request
    # building, URL and response/error parsing are still the SDK's.
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.signer.signer import Signer
    from huaweicloudsdkvpcep.v1 import ListEndpointServiceRequest
    check(ctx.token is not None, "no token (iam_password_token failed)")

    class TokenCredentials(BasicCredentials):
        def __init__(self, token, project_id):
            # non-empty AK/SK: with none the SDK would try the ECS metadata service
            super().__init__("token-auth", "token-auth", project_id)
            self.token = token

        def sign_request(self, request):
            request.header_params["X-Auth-Token"] = self.token
            Signer.process_request_uri(request)
            return request

    def client(token):
        c = ctx.vpcep_client(BasicCredentials(ctx.args.ak, ctx.args.sk, ctx.args.project_id))
        return c.with_credentials(TokenCredentials(token, ctx.args.project_id))

    r = client(ctx.token).list_endpoint_service(ListEndpointServiceRequest(limit=10))
    eq(r.total_count, 3, "services listed with the token")
    c = client(ctx.token)
    from huaweicloudsdkvpcep.v1 import ListServiceConnectionsRequest
    r = c.list_service_connections(ListServiceConnectionsRequest(
        vpc_endpoint_service_id=SVC_PAY, id=EP_BIG_MARKER))
    eq([(x.id, x.marker_id) for x in r.connections], [(EP_BIG_MARKER, BIG_MARKER)],
       "connection listed with the token")
    expect_error(lambda: client("MIInotatoken").list_endpoint_service(
        ListEndpointServiceRequest()), 401, {"APIGW.0301"}, "unknown token")
    return "via an X-Auth-Token credentials shim: the SDK has no token credential"


def run(args):
    started = time.monotonic()
    ctx = Ctx(args)
    passed = failed = 0
    for fn in CASES:
        t = time.monotonic()
        try:
            note = fn(ctx)
            passed += 1
            extra = f" ({note})" if note else ""
            print(f"ok      {fn.__name__} [{time.monotonic() - t:.2f}s]{extra}", flush=True)
        except CaseFailure as e:
            failed += 1
            print(f"FAILED  {fn.__name__}: {e}", flush=True)
        except Exception as e:  # SDK exceptions on calls that should succeed, bugs
            failed += 1
            print(f"FAILED  {fn.__name__}: unexpected {type(e).__name__}: {e}", flush=True)
            if args.verbose:
                traceback.print_exc()
    print(f"# {len(CASES)} cases in {time.monotonic() - started:.1f}s", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ws = sub.add_parser("write-seed", help="write the seed file the cases expect")
    ws.add_argument("file")
    r = sub.add_parser("run", help="run the cases against a simulator")
    r.add_argument("--endpoint", required=True, help="simulator URL, e.g. http://127.0.0.1:8080")
    r.add_argument("--ak", required=True)
    r.add_argument("--sk", required=True)
    r.add_argument("--project-id", required=True)
    r.add_argument("--domain", required=True, help="IAM account (domain) name")
    r.add_argument("--user", required=True, help="IAM user name")
    r.add_argument("--password", required=True)
    r.add_argument("-v", "--verbose", action="store_true", help="tracebacks on failures")
    args = p.parse_args()
    if args.cmd == "write-seed":
        write_seed(args.file)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
