"""End-to-end check of a Kelson API server with the official Python
`kubernetes` client: create a Deployment, list Pods, stream a watch.

Usage: client_e2e.py KUBECONFIG
Run by crates/kelson/tests/e2e_clients.rs against a fresh `kelson server`.
Prints "python client e2e: ok" and exits 0 when every check passes; exits 1
with a message naming the failed check (and the API response, if any).
"""

import sys
import threading
import time
import traceback

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "py-e2e"


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def step(name):
    print(f"- {name}", flush=True)


def create_deployment(apps):
    step("create a Deployment")
    labels = {"app": "web"}
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image="nginx:1.25",
                            ports=[client.V1ContainerPort(container_port=80)],
                        )
                    ]
                ),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(NS, body)
    check(created.metadata.name == "web", f"created name {created.metadata.name!r}")
    check(created.metadata.uid, "created Deployment has no uid")
    check(created.metadata.resource_version, "created Deployment has no resourceVersion")
    check(created.spec.replicas == 2, f"replicas {created.spec.replicas!r}")
    # Defaults the server fills in, as upstream does.
    check(
        created.spec.strategy.type == "RollingUpdate",
        f"strategy {created.spec.strategy!r}",
    )
    check(
        created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent",
        "container imagePullPolicy not defaulted to IfNotPresent",
    )

    got = apps.read_namespaced_deployment("web", NS)
    check(got.metadata.uid == created.metadata.uid, "read returned another uid")
    listed = apps.list_namespaced_deployment(NS, label_selector="app=web")
    check(
        [d.metadata.name for d in listed.items] == ["web"],
        f"deployments listed: {[d.metadata.name for d in listed.items]}",
    )

    scaled = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
    check(scaled.spec.replicas == 3, f"scale returned replicas {scaled.spec.replicas!r}")
    check(
        apps.read_namespaced_deployment("web", NS).spec.replicas == 3,
        "scale did not change the Deployment",
    )

    try:
        apps.create_namespaced_deployment(NS, body)
        raise Mismatch("creating the Deployment twice succeeded")
    except ApiException as e:
        check(e.status == 409, f"duplicate create: HTTP {e.status}, want 409")


def list_pods(core):
    step("list Pods")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="solo", labels={"app": "solo"}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox:1.36")]
        ),
    )
    core.create_namespaced_pod(NS, pod)
    mine = core.list_namespaced_pod(NS, label_selector="app=solo")
    check(
        [p.metadata.name for p in mine.items] == ["solo"],
        f"pods with app=solo: {[p.metadata.name for p in mine.items]}",
    )
    check(mine.metadata.resource_version, "pod list has no resourceVersion")
    everywhere = core.list_pod_for_all_namespaces()
    check(
        any(p.metadata.name == "solo" and p.metadata.namespace == NS for p in everywhere.items),
        "list_pod_for_all_namespaces misses py-e2e/solo",
    )
    none = core.list_namespaced_pod(NS, label_selector="app=absent")
    check(none.items == [], f"selector app=absent matched {len(none.items)} pods")
    try:
        core.read_namespaced_pod("missing", NS)
        raise Mismatch("reading a missing Pod succeeded")
    except ApiException as e:
        check(e.status == 404, f"missing pod: HTTP {e.status}, want 404")


def stream_watch(core):
    step("stream a watch")
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    errors = []

    def change():
        try:
            time.sleep(0.5)
            cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"v": "1"})
            core.create_namespaced_config_map(NS, cm)
            core.patch_namespaced_config_map("watched", NS, {"data": {"v": "2"}})
            core.delete_namespaced_config_map("watched", NS)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=change)
    writer.start()
    seen = []
    w = watch.Watch()
    for ev in w.stream(
        core.list_namespaced_config_map,
        NS,
        resource_version=rv,
        timeout_seconds=20,
    ):
        obj = ev["object"]
        if obj.metadata.name != "watched":
            continue
        seen.append((ev["type"], (obj.data or {}).get("v")))
        if ev["type"] == "DELETED":
            w.stop()
    writer.join()
    if errors:
        raise errors[0]
    want = [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
    check(seen == want, f"watch events {seen}, want {want}")


def main():
    if len(sys.argv) != 2:
        print("usage: client_e2e.py KUBECONFIG", file=sys.stderr)
        return 2
    config.load_kube_config(config_file=sys.argv[1])
    host = client.Configuration.get_default_copy().host
    if not host.startswith("https://127.0.0.1:"):
        print(f"refusing to talk to {host}: tests use 127.0.0.1 only", file=sys.stderr)
        return 1
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        create_deployment(apps)
        list_pods(core)
        stream_watch(core)
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    except ApiException as e:
        print(
            f"API ERROR: HTTP {e.status} {e.reason}\nbody: {e.body}\n{traceback.format_exc()}",
            file=sys.stderr,
        )
        return 1
    except Exception:
        print(f"ERROR:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    print("python client e2e: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
