"""setuptools hook: the metadata is in pyproject.toml. Built with SSMAX_LIBRARY set (the path of
libssmax.so), the installed package records that path in ssmax/_build_info.py, as meson install
does, and finds the library without the variable."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def run(self):
        super().run()
        lib = os.environ.get("SSMAX_LIBRARY")
        if lib and not self.dry_run:
            path = os.path.join(self.build_lib, "ssmax", "_build_info.py")
            with open(path, "w") as f:
                f.write("# Written by pip install (python/setup.py) from SSMAX_LIBRARY.\n")
                f.write("LIBRARY = %r\n" % os.path.abspath(lib))


setup(cmdclass={"build_py": BuildPy})
