"""Build hwnas-device from the checkout's own sources (one level up): the ``hardware``
packages and, of ``nas``, only ``nas/__init__.py`` and ``nas/registry.py``."""
from setuptools import setup
from setuptools.command.build_py import build_py

NAS_MODULES = {"__init__", "registry"}


class DeviceBuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "nas":
            modules = [m for m in modules if m[1] in NAS_MODULES]
        return modules


setup(package_dir={"": ".."}, packages=["hardware", "hardware.remote", "nas"],
      cmdclass={"build_py": DeviceBuildPy})
