"""A Kubernetes API emulator for the e2e test `kube.rs`: kmock's KubernetesEmulator on
127.0.0.1 (a free port), knowing the LanewatchSite resource (with its status subresource),
ConfigMaps and Leases. Prints {"url": ...} on its first line once it listens, then serves until
its standard input closes or `--max-secs` pass, whichever is first, so it never outlives the
test that started it.

What kmock does, and what it does not: objects are stored as JSON and a PATCH (of any content
type, server-side apply's included) is merged into them as a JSON merge patch; lists and watches
are served from that store. It does not implement server-side apply's field ownership,
resourceVersion conflicts, admission, or validation against the CRD's schema.
"""

import argparse
import asyncio
import json
import sys

import kmock


async def serve(max_secs: float) -> None:
    async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s) as server:
        k8s.resources['lanewatch.io/v1alpha1/lanewatchsites'] = kmock.ResourceInfo(
            kind='LanewatchSite', singular='lanewatchsite', namespaced=True,
            shortnames={'lwsite'}, subresources={'status'},
            verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'},
        )
        k8s.resources['v1/configmaps'] = kmock.ResourceInfo(
            kind='ConfigMap', singular='configmap', namespaced=True,
            verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'},
        )
        k8s.resources['coordination.k8s.io/v1/leases'] = kmock.ResourceInfo(
            kind='Lease', singular='lease', namespaced=True,
            verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'},
        )
        print(json.dumps({'url': str(server.url).rstrip('/')}), flush=True)
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        try:
            await asyncio.wait_for(stdin_closed, timeout=max_secs)
        except asyncio.TimeoutError:
            print(f'kmock: {max_secs} s passed; stopping', file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--max-secs', type=float, default=120.0)
    args = parser.parse_args()
    asyncio.run(serve(args.max_secs))


if __name__ == '__main__':
    main()
