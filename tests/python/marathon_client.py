#!/usr/bin/env python3
"""Drives garrison-control's Marathon API with the published Python Marathon
client (`marathon` on PyPI, 0.13.x), unchanged, as a DC/OS user would:
`MarathonClient(url, auth_token=TOKEN, verify=CA)`.

Each step prints one JSON line on stdout, {"step": NAME, "ok": true, ...};
the first failure prints {"step": NAME, "ok": false, "error": WHY}, repeats
WHY on stderr and exits 1 (2 for a bad command line). Every wait is bounded
by --timeout. Needs nothing but the virtualenv `cargo xtask deps` makes
(`target/pyenv`): run it with `target/pyenv/bin/python`.

Steps: info, unauthenticated (a client without a token, and one with a bad
token, get HTTP 401 and change nothing), create_app, list_apps, get_app,
wait_running_1, list_apps_embed_tasks, list_tasks, scale_app (to 2),
wait_running_2, list_tasks_2, list_deployments, kill_task (scale=True: one task
killed, the app at 1 instance), kill_tasks (scale=True: instances drop by the
tasks killed; the app stays), delete_app.

--no-agents: for a control without agents (instances stay queued): the waits
are skipped and the task steps check that no task exists, so create, list,
get, scale, deployments, kill_tasks and delete are still exercised.

--legacy-auth: for a control that only guards mutations with a static token
(reads open, no WWW-Authenticate): the read and header checks of
`unauthenticated` are skipped.
"""
import argparse
import collections
import collections.abc
import json
import sys
import time

# marathon 0.13 predates Python 3.10: it uses collections.Iterable (and
# friends) which now live only in collections.abc.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import logging  # noqa: E402
from importlib import metadata  # noqa: E402

import requests  # noqa: E402
from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.app import PortDefinition  # noqa: E402


class StepFailed(Exception):
    pass


def emit(step, **fields):
    print(json.dumps({"step": step, "ok": True, **fields}, sort_keys=True), flush=True)


def check(condition, why):
    if not condition:
        raise StepFailed(why)


def expect_status(status, call, what):
    """`call()` must raise MarathonHttpError with `status`."""
    try:
        result = call()
    except MarathonHttpError as e:
        check(e.status_code == status, f"{what}: HTTP {e.status_code} ({e.error_message}), expected {status}")
        return e
    raise StepFailed(f"{what}: succeeded ({result!r}), expected HTTP {status}")


def wait_until(what, timeout, probe):
    """Polls `probe()` (returns (done, observed)) every 0.5 s up to `timeout` s."""
    deadline = time.monotonic() + timeout
    observed = None
    while True:
        done, observed = probe()
        if done:
            return observed
        if time.monotonic() >= deadline:
            raise StepFailed(f"{what}: not within {timeout} s; last seen {observed}")
        time.sleep(0.5)


def running(client, app_id):
    app = client.get_app(app_id)
    return app.tasks_running, [(t.id, t.state) for t in app.tasks]


def wait_running(client, app_id, n, timeout):
    def probe():
        count, tasks = running(client, app_id)
        return count == n, {"tasksRunning": count, "tasks": tasks}

    return wait_until(f"{app_id} with {n} running task(s)", timeout, probe)


def the_app(apps, app_id, what):
    found = [a for a in apps if a.id == app_id]
    check(len(found) == 1, f"{what}: {app_id} not listed once (ids: {[a.id for a in apps]})")
    return found[0]


def new_app(args):
    return MarathonApp(
        cmd=args.cmd,
        instances=1,
        cpus=0.1,
        mem=32,
        port_definitions=[PortDefinition(port=0, protocol="tcp", name="http", labels={"VIP_0": args.vip})],
    )


def step_info(client, args):
    info = client.get_info()
    check(bool(info.name), f"/v2/info has no name: {info}")
    emit("info", name=info.name, version=info.version, leader=info.leader,
         client=metadata.version("marathon"))


def step_unauthenticated(client, args, verify):
    anon = MarathonClient(args.url, verify=verify, timeout=args.request_timeout)
    forged = MarathonClient(args.url, auth_token="not-a-token", verify=verify, timeout=args.request_timeout)
    probe_id = args.app_id.rstrip("/") + "-unauthenticated"
    checked = []
    for who, c in (("no token", anon), ("bad token", forged)):
        expect_status(401, lambda c=c: c.create_app(probe_id, new_app(args)), f"create_app with {who}")
        checked.append(f"create_app/{who}")
        if not args.legacy_auth:
            expect_status(401, c.list_apps, f"list_apps with {who}")
            expect_status(401, lambda c=c: c.get_app(args.app_id), f"get_app with {who}")
            checked += [f"list_apps/{who}", f"get_app/{who}"]
    try:
        client.get_app(probe_id)
        raise StepFailed(f"{probe_id} exists although every create_app was refused")
    except NotFoundError:
        pass
    www = None
    if not args.legacy_auth:
        # The client hides response headers: ask once with requests itself.
        r = requests.get(args.url.rstrip("/") + "/v2/apps", verify=verify, timeout=args.request_timeout)
        www = r.headers.get("WWW-Authenticate", "")
        check(r.status_code == 401, f"GET /v2/apps without a token: HTTP {r.status_code}, expected 401")
        check("oauthjwt" in www.lower(), f"the 401 says WWW-Authenticate: {www!r}, expected oauthjwt")
    emit("unauthenticated", refused=checked, www_authenticate=www)


def step_create(client, args):
    created = client.create_app(args.app_id, new_app(args))
    check(created is not False, "create_app: the answer was not 201")
    check(created.id == args.app_id, f"create_app answered id {created.id}")
    check(created.instances == 1, f"create_app answered instances {created.instances}")
    check(len(created.port_definitions) == 1, f"create_app answered portDefinitions {created.port_definitions}")
    port = created.port_definitions[0]
    check(port.labels.get("VIP_0") == args.vip, f"create_app answered labels {port.labels}")
    emit("create_app", id=created.id, version=created.version, service_port=port.port)


def step_list(client, args):
    app = the_app(client.list_apps(), args.app_id, "list_apps")
    check(app.cmd == args.cmd, f"list_apps: cmd is {app.cmd!r}")
    check(app.port_definitions[0].labels.get("VIP_0") == args.vip, f"list_apps: labels {app.port_definitions[0].labels}")
    emit("list_apps", id=app.id, instances=app.instances, cpus=app.cpus, mem=app.mem)


def step_get(client, args):
    app = client.get_app(args.app_id)
    check(app.id == args.app_id, f"get_app answered id {app.id}")
    check((app.instances, app.cpus, app.mem) == (1, 0.1, 32),
          f"get_app: instances/cpus/mem {app.instances}/{app.cpus}/{app.mem}, expected 1/0.1/32")
    emit("get_app", id=app.id, tasks_running=app.tasks_running, tasks_staged=app.tasks_staged)


def step_embed_tasks(client, args, expected):
    app = the_app(client.list_apps(embed_tasks=True), args.app_id, "list_apps(embed_tasks=True)")
    check(len(app.tasks) == expected, f"list_apps(embed_tasks=True): {len(app.tasks)} task(s), expected {expected}")
    for t in app.tasks:
        check(t.app_id == args.app_id, f"an embedded task has appId {t.app_id}")
    emit("list_apps_embed_tasks", tasks=[t.id for t in app.tasks])


def step_list_tasks(client, args, expected, name="list_tasks"):
    tasks = client.list_tasks(args.app_id)
    running_ids = [t.id for t in tasks if t.state == "TASK_RUNNING"]
    check(len(running_ids) == expected, f"list_tasks({args.app_id}): {[(t.id, t.state) for t in tasks]}, expected {expected} running")
    for t in tasks:
        check(t.app_id == args.app_id, f"task {t.id} has appId {t.app_id}")
        if t.state == "TASK_RUNNING":
            check(bool(t.host) and t.staged_at is not None, f"task {t.id}: host {t.host!r}, stagedAt {t.staged_at}")
    everywhere = [t.id for t in client.list_tasks()]
    check(all(i in everywhere for i in running_ids), f"list_tasks() lacks some of {running_ids}")
    emit(name, tasks=[{"id": t.id, "state": t.state, "host": t.host, "ports": t.ports,
                               "staged_at": t.staged_at.isoformat() if t.staged_at else None} for t in tasks])
    return running_ids


def step_scale(client, args):
    answer = client.scale_app(args.app_id, instances=2)
    check(isinstance(answer, dict) and "deploymentId" in answer, f"scale_app answered {answer!r}")
    app = client.get_app(args.app_id)
    check(app.instances == 2, f"after scale_app(2) get_app says instances {app.instances}")
    emit("scale_app", deployment=answer["deploymentId"], instances=app.instances)


def step_deployments(client, args, expect_pending):
    deployments = client.list_deployments()
    mine = [d for d in deployments if args.app_id in (d.affected_apps or [])]
    if expect_pending:
        check(len(mine) == 1, f"list_deployments: {len(mine)} deployment(s) for {args.app_id}, expected the pending one")
    emit("list_deployments", ids=[d.id for d in deployments], mine=[d.id for d in mine])


def step_kill_task(client, args, task_ids):
    victim = task_ids[0]
    answer = client.kill_task(args.app_id, victim, scale=True)
    app = client.get_app(args.app_id)
    check(app.instances == 1, f"after kill_task(scale=True) instances is {app.instances}")

    def probe():
        count, tasks = running(client, args.app_id)
        return count == 1 and victim not in [t for t, _ in tasks], {"tasksRunning": count, "tasks": tasks}

    wait_until(f"{victim} gone and 1 task running", args.timeout, probe)
    emit("kill_task", killed=victim, answer=answer if isinstance(answer, dict) else repr(answer))


def step_kill_tasks(client, args, agents):
    before = client.get_app(args.app_id)
    live = [t.id for t in before.tasks if t.state != "TASK_KILLING"]
    answer = client.kill_tasks(args.app_id, scale=True)
    app = client.get_app(args.app_id)  # the app stays
    # Marathon's killAndScale: instances drop by the number of tasks killed.
    expected = before.instances - len(live)
    check(app.instances == expected,
          f"after kill_tasks(scale=True) instances is {app.instances}, expected {before.instances} - {len(live)}")
    if agents:
        wait_running(client, args.app_id, 0, args.timeout)
    shown = answer if isinstance(answer, dict) else [t.id for t in answer]
    emit("kill_tasks", answer=shown, killed=live, instances=app.instances)


def step_delete(client, args):
    answer = client.delete_app(args.app_id)
    check(isinstance(answer, dict) and "deploymentId" in answer, f"delete_app answered {answer!r}")

    def probe():
        try:
            client.get_app(args.app_id)
            return False, "still there"
        except NotFoundError:
            return True, "gone"

    wait_until(f"{args.app_id} deleted", args.timeout, probe)
    check(all(a.id != args.app_id for a in client.list_apps()), "list_apps still lists the deleted app")
    emit("delete_app", deployment=answer["deploymentId"])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the control's API, e.g. https://127.0.0.1:8443")
    p.add_argument("--ca", help="PEM CA bundle to verify the control's certificate (default: the system's)")
    p.add_argument("--token", required=True, help="sent as Authorization: token=<TOKEN> (auth_token=)")
    p.add_argument("--app-id", default="/python-client", help="the app to create (deleted at the end)")
    p.add_argument("--cmd", default="sleep 3600", help="the app's command")
    p.add_argument("--vip", help="the VIP_0 label (default: /<app name>:80)")
    p.add_argument("--timeout", type=float, default=60, help="seconds each wait may take")
    p.add_argument("--request-timeout", type=float, default=10, help="seconds per HTTP request")
    p.add_argument("--no-agents", action="store_true", help="no agent runs tasks: skip the waits")
    p.add_argument("--legacy-auth", action="store_true", help="reads are open and 401s lack WWW-Authenticate")
    p.add_argument("--verbose", action="store_true", help="the client's own log on stderr")
    args = p.parse_args(argv)
    if not args.app_id.startswith("/"):
        args.app_id = "/" + args.app_id
    if args.vip is None:
        args.vip = "/" + args.app_id.strip("/").replace("/", "-") + ":80"
    return args


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, stream=sys.stderr)
    if not args.verbose:
        # Keep the client's connection errors (a TLS failure surfaces only as
        # NoResponseError otherwise), not its log of the expected 401s.
        logging.getLogger("marathon").addFilter(lambda r: r.getMessage().startswith("Error while calling"))
    verify = args.ca if args.ca else True
    client = MarathonClient(args.url, auth_token=args.token, verify=verify, timeout=args.request_timeout)
    agents = not args.no_agents
    steps = [
        ("info", lambda: step_info(client, args)),
        ("unauthenticated", lambda: step_unauthenticated(client, args, verify)),
        ("create_app", lambda: step_create(client, args)),
        ("list_apps", lambda: step_list(client, args)),
        ("get_app", lambda: step_get(client, args)),
    ]
    if agents:
        steps.append(("wait_running_1", lambda: emit("wait_running_1", **wait_running(client, args.app_id, 1, args.timeout))))
    state = {}
    steps += [
        ("list_apps_embed_tasks", lambda: step_embed_tasks(client, args, 1 if agents else 0)),
        ("list_tasks", lambda: state.update(tasks=step_list_tasks(client, args, 1 if agents else 0))),
        ("scale_app", lambda: step_scale(client, args)),
    ]
    if agents:
        steps.append(("wait_running_2", lambda: emit("wait_running_2", **wait_running(client, args.app_id, 2, args.timeout))))
        steps.append(("list_tasks_2", lambda: state.update(tasks=step_list_tasks(client, args, 2, "list_tasks_2"))))
    steps.append(("list_deployments", lambda: step_deployments(client, args, expect_pending=not agents)))
    if agents:
        steps.append(("kill_task", lambda: step_kill_task(client, args, state["tasks"])))
    steps += [
        ("kill_tasks", lambda: step_kill_tasks(client, args, agents)),
        ("delete_app", lambda: step_delete(client, args)),
    ]
    for name, run in steps:
        try:
            run()
        except Exception as e:  # any failure, the client's exceptions included
            why = f"{type(e).__name__}: {e}"
            print(json.dumps({"step": name, "ok": False, "error": why}, sort_keys=True), flush=True)
            print(f"marathon_client.py: step {name} failed: {why}", file=sys.stderr)
            return 1
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
