"""Run by test_bundle.py as ``python -S -c <this file> BUNDLE`` inside an unpacked bundle.

Imports every module of the bundled package (and the names each exports, which
loads ``ble_scanner.client``'s lazy ones), then prints as JSON what failed and
the file every loaded module came from, so the test can tell that nothing
outside the stdlib, dbus-fast and the bundle was used. Standard library only.
"""

import importlib
import json
import os
import sys
import sysconfig

bundle = sys.argv[1]
# As on the device: the entry script's folder first, then ext/ (dbus_ble_scanner.py).
sys.path[0] = bundle
sys.path.insert(1, os.path.join(bundle, "ext"))

names = ["bleak", "bleak.backends.device"]
package = os.path.join(bundle, "ble_scanner")
for folder, dirs, files in os.walk(package):
    dirs.sort()
    parts = os.path.relpath(folder, bundle).split(os.sep)
    for file in sorted(files):
        if file == "__init__.py":
            names.append(".".join(parts))
        elif file.endswith(".py"):
            names.append(".".join([*parts, file[:-3]]))

failed = {}
for name in names:
    try:
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", ()):
            getattr(module, exported)
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        failed[name] = {"error": f"{type(exc).__name__}: {exc}", "missing": missing}

paths = sysconfig.get_paths()
print(
    json.dumps(
        {
            "no_site": sys.flags.no_site,
            "sys_path": sys.path,
            "stdlib": [paths["stdlib"], paths["platstdlib"]],
            "site_packages": [paths["purelib"], paths["platlib"]],
            "imported": names,
            "failed": failed,
            "files": {
                name: getattr(module, "__file__", None) for name, module in sys.modules.items()
            },
        }
    )
)
