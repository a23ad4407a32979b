"""
Setuptools entry point; metadata lives in setup.cfg.

After installing, Twisted's plugin cache is refreshed so that
C{twistd --help} lists C{exftp} at once (the cache would otherwise be
rebuilt on first use, if the directory is writable).
"""

from setuptools import setup
from setuptools.command.install import install


def _refresh_plugin_cache() -> None:
    try:
        from twisted.plugin import IPlugin, getPlugins

        list(getPlugins(IPlugin))
    except Exception:  # noqa: BLE001 - never fail an install over a cache
        pass


class _Install(install):
    def run(self) -> None:
        super().run()
        _refresh_plugin_cache()


setup(cmdclass={"install": _Install})
