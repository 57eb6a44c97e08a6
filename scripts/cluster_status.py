"""Print a standalone master's JSON status (read from stdin) as a short table; used by cluster.sh."""

from __future__ import annotations

import json
import sys


def describe(status: dict) -> list[str]:
    apps = status.get("activeapps", [])
    lines = [
        f"status {status.get('status')}: {status.get('aliveworkers', 0)} alive workers, "
        f"{status.get('coresused', 0)}/{status.get('cores', 0)} cores used, {len(apps)} running applications"
    ]
    for worker in status.get("workers", []):
        lines.append(
            f"  {worker['id']}  {worker['state']}  cores {worker['coresused']}/{worker['cores']}  "
            f"memory {worker['memoryused']}/{worker['memory']} MiB  ui {worker['webuiaddress']}"
        )
    lines += [f"  app {app['id']}  {app['name']}  {app['state']}  cores {app['cores']}" for app in apps]
    return lines


if __name__ == "__main__":
    print("\n".join(describe(json.load(sys.stdin))))
